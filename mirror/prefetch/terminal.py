"""Terminal front of `mirror prefetch`: rich progress bars and the summary table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table

from mirror.config import Config
from mirror.prefetch.images import ImageResult, prefetch
from mirror.proxy.service import running_service
from mirror.units import human_size


async def run_prefetch(
    config: Config, images: list[str], platform: str | None, parallel: int, sif: bool = False
) -> list[ImageResult]:
    """Prefetch with progress bars (bytes, rate, ETA per image and overall), converting
    to SIFs with `sif`; print a summary and every failure with its reason. Returns the
    failed results."""
    # No emoji codes: ":smile:" in a tag followed by ": reason" is the user's text.
    console = Console(stderr=True, emoji=False, highlight=False)
    columns = (
        TextColumn("{task.description}", table_column=Column(overflow="fold")),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        overall = bars.add_task("[bold]all images", total=0)
        # Names are the user's text: escaped, or rich reads `[...]` and `:abc:` as markup.
        tasks: dict[str, TaskID] = {
            image: bars.add_task(escape(image), total=0) for image in images
        }

        def report(image: str, total: int, done: int) -> None:
            for task in (tasks[image], overall):
                if total:
                    bars.update(task, total=(bars.tasks[task].total or 0) + total)
                if done:
                    bars.advance(task, done)

        def stage(image: str, text: str) -> None:
            bars.update(tasks[image], description=f"{escape(image)} ({text})")

        async with running_service(config) as service:
            results = await prefetch(
                service,
                images,
                platform=platform,
                parallel=parallel,
                progress=report,
                sif=sif,
                stage=stage,
            )
    console.print(_summary(results))
    for result in results:
        if result.sif:
            console.print(
                f"converted {escape(result.reference)} to the SIF {escape(result.sif)}",
                soft_wrap=True,
            )
    failed = [r for r in results if not r.ok]
    for result in failed:
        console.print(
            f"[red]failed[/red] {escape(result.reference)}: {escape(result.error or '')}",
            soft_wrap=True,  # one line per failure, whole, for grep and for copying
        )
    return failed


def _summary(results: list[ImageResult]) -> Table:
    table = Table(title="prefetch")
    # The image column folds a long name over lines instead of cutting it to "docker.io/l…".
    table.add_column("image", overflow="fold")
    table.add_column("status")
    for column in ("manifests", "blobs", "fetched", "already cached"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            escape(r.reference),
            ("ok, converted" if r.sif else "ok") if r.ok else "[red]failed[/red]",
            str(r.manifests),
            str(r.blobs),
            human_size(r.fetched_bytes),
            human_size(r.cached_bytes),
        )
    return table
