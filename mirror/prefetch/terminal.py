"""Terminal front of `mirror prefetch`: rich progress bars and the summary table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from mirror.config import Config
from mirror.prefetch.images import ImageResult, prefetch
from mirror.proxy.service import running_service
from mirror.units import human_size


async def run_prefetch(
    config: Config, images: list[str], platform: str | None, parallel: int
) -> list[ImageResult]:
    """Prefetch with progress bars (bytes, rate, ETA per image and overall); print a
    summary and every failure with its reason. Returns the failed results."""
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        overall = bars.add_task("[bold]all images", total=0)
        tasks: dict[str, TaskID] = {image: bars.add_task(image, total=0) for image in images}

        def report(image: str, total: int, done: int) -> None:
            for task in (tasks[image], overall):
                if total:
                    bars.update(task, total=(bars.tasks[task].total or 0) + total)
                if done:
                    bars.advance(task, done)

        async with running_service(config) as service:
            results = await prefetch(
                service, images, platform=platform, parallel=parallel, progress=report
            )
    console.print(_summary(results))
    failed = [r for r in results if not r.ok]
    for result in failed:
        console.print(f"[red]failed[/red] {result.reference}: {result.error}")
    return failed


def _summary(results: list[ImageResult]) -> Table:
    table = Table(title="prefetch")
    for column in ("image", "status", "manifests", "blobs", "fetched", "already cached"):
        table.add_column(column, justify="right" if column not in ("image", "status") else "left")
    for r in results:
        table.add_row(
            r.reference,
            "ok" if r.ok else "[red]failed[/red]",
            str(r.manifests),
            str(r.blobs),
            human_size(r.fetched_bytes),
            human_size(r.cached_bytes),
        )
    return table
