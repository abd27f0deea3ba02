"""Texts several tests score or compare."""

PARAGRAPH = (
    "Paris is the capital and largest city of France. It sits on the river Seine, in the north of the country, "
    "and has been a centre of trade, science and the arts for many centuries. Visitors come to see its museums, "
    "its old churches and the iron tower that was built for a world fair at the end of the nineteenth century.")
