"""Compute: next-token distributions and the logit lens, what each block writes into the residual stream, scoring a
text token by token, comparing two models.
Returns dataclasses of plain values and never prints; it may import core, loading and other compute packages."""
