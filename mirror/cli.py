"""The `mirror` command: thin Typer commands over the library."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from mirror import config as config_module
from mirror.errors import ConfigError, InvalidValue, MirrorError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="hpc-mirror: a pull-through cache for OCI registries, for HPC sites.",
)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Site config TOML, merged over the embedded default."),
]


def _print_version(wanted: bool) -> None:
    if wanted:
        from mirror import __version__

        typer.echo(f"hpc-mirror {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """hpc-mirror: a pull-through cache for OCI registries, for HPC sites."""


Command = TypeVar("Command", bound=Callable[..., Any])


@contextmanager
def _errors_reported() -> Iterator[None]:
    """The one place where errors become what a command prints and its exit status: 2 for
    what the user gave (config, arguments, list files), 1 for an operation that failed."""
    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {exc.path}: {problem}", err=True)
        raise typer.Exit(2) from None
    except InvalidValue as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except MirrorError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(
            f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
            err=True,
        )
        raise typer.Exit(1) from None


def _command(name: str | None = None) -> Callable[[Command], Command]:
    """`app.command`, with the command's errors reported by `_errors_reported`."""

    def register(func: Command) -> Command:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _errors_reported():
                return func(*args, **kwargs)

        app.command(name)(run)
        return func

    return register


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _load(path: Path | None, overrides: dict | None = None) -> config_module.Config:
    return config_module.load(path, overrides)


@_command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        Optional[str], typer.Option(help="Bind address (overrides server.host).")
    ] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (overrides server.port).")] = None,
    workers: Annotated[
        int, typer.Option(help="Processes sharing the port (SO_REUSEPORT), e.g. one per core.")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the pull-through proxy."""
    from mirror.proxy.app import serve as serve_app

    # Checked here, so a bad option is reported as the option, not as a key of the file.
    if port is not None and not 0 < port < 65536:
        raise InvalidValue(f"--port {port}: must be 1-65535")
    if workers < 1:
        raise InvalidValue(f"--workers {workers}: must be 1 or more")
    if log_level.lower() not in _LOG_LEVELS:
        raise InvalidValue(f"--log-level {log_level!r}: must be one of {', '.join(_LOG_LEVELS)}")
    server = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    cfg = _load(config, {"server": server} if server else None)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scheme = "https" if cfg.server.tls else "http"
    typer.echo(
        f"hpc-mirror serving {cfg.cache.root} on {scheme}://{cfg.server.host}:"
        f"{cfg.server.port} with {workers} process(es) (config: {cfg.source})",
        err=True,
    )
    serve_app(cfg, workers)


@_command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Print the effective config (defaults and --config merged) as TOML, secrets as ***."""
    from mirror.config_toml import to_toml

    typer.echo(to_toml(_load(config)), nl=False)


@_command()
def render(
    config: ConfigOption = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="Output directory (overrides catalog.out, default site/)."
        ),
    ] = None,
) -> None:
    """Render the static HTML catalog of the cache (reads the store only, never upstreams)."""
    from mirror.catalog.render import render as render_catalog

    cfg = _load(config)
    report = render_catalog(cfg, out)
    typer.echo(
        f"rendered {report.repositories} repositories, {report.tags} tags into "
        f"{report.out} ({report.pages_written} files written, "
        f"{report.pages_reused} pages unchanged)"
    )


@_command()
def prefetch(
    images: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Images as pulled through the mirror: docker.io/library/alpine:3.20, "
            "ghcr.io/org/tool@sha256:..."
        ),
    ] = None,
    file: Annotated[
        Optional[Path],
        typer.Option("--file", "-f", help="A file with one image per line (# starts a comment)."),
    ] = None,
    platform: Annotated[
        Optional[str],
        typer.Option(
            help="Only this platform of multi-arch images, e.g. linux/amd64 (default: all)."
        ),
    ] = None,
    parallel: Annotated[int, typer.Option(help="Blob downloads at once.")] = 4,
    sif: Annotated[
        bool,
        typer.Option(
            "--sif",
            help="Then convert each image to a SIF, for --platform or else [sif] platform.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Fill the cache with images, without a client; a rerun fetches only what is missing."""
    import asyncio

    from mirror.prefetch.images import check_request
    from mirror.prefetch.terminal import run_prefetch
    from mirror.proxy.routing import Router

    wanted = _image_list(images, file)
    cfg = _load(config)
    check_request(Router(cfg), wanted, platform)
    failed = asyncio.run(run_prefetch(cfg, wanted, platform, parallel, sif))
    raise typer.Exit(1 if failed else 0)


def _image_list(images: list[str] | None, file: Path | None) -> list[str]:
    """Images from arguments and a list file (one per line, # starts a comment)."""
    wanted = list(images or [])
    if file is not None:
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise InvalidValue(f"cannot read {file}: {exc.strerror}") from None
        wanted += [line.split("#", 1)[0].strip() for line in lines]
    wanted = [image for image in wanted if image]
    if not wanted:
        raise InvalidValue("name images as arguments or with --file")
    return wanted


@_command()
def export(
    bundle: Annotated[Path, typer.Argument(help="The tar file to write.")],
    images: Annotated[Optional[list[str]], typer.Argument(help="Images (name:tag).")] = None,
    file: Annotated[
        Optional[Path], typer.Option("--file", "-f", help="A file with one image per line.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write cached images to a bundle (an OCI image layout tar) for an air-gapped site."""
    from mirror.cache import bundle as bundle_module
    from mirror.cache.store import ContentStore
    from mirror.proxy.routing import Router
    from mirror.reference import ImageRef

    cfg = _load(config)
    router = Router(cfg)
    chosen = []
    for text in _image_list(images, file):
        ref = ImageRef.parse(text)
        if ":" in ref.reference:
            raise bundle_module.BundleError(
                f"{text}: export images by tag, so they keep their names"
            )
        chosen.append((router.route(ref.path), ref.reference))
    store = ContentStore(cfg.cache.root, create=False)
    temp = bundle.with_name(f".{bundle.name}.partial")
    with open(temp, "wb") as out:
        blobs = bundle_module.export(store, chosen, out)
    temp.rename(bundle)
    typer.echo(
        f"wrote {len(chosen)} images ({blobs} blobs, {bundle.stat().st_size} bytes) to {bundle}"
    )


@_command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by `mirror export`.")],
    config: ConfigOption = None,
) -> None:
    """Verify a bundle and add its images to the cache; a bad bundle leaves nothing."""
    from mirror.cache import bundle as bundle_module
    from mirror.cache.open_cache import open_cache

    cfg = _load(config)
    with open_cache(cfg.cache) as cache:
        try:
            with open(bundle, "rb") as source:
                imported = bundle_module.import_bundle(cache.store, cache.metadata, source)
        except (bundle_module.BundleError, OSError) as exc:
            raise bundle_module.BundleError(f"refused {bundle}: {exc}") from None
    for image in imported:
        typer.echo(f"imported {image} ({image.digest})")


@_command()
def verify(config: ConfigOption = None) -> None:
    """Re-hash every cached blob; quarantine and report corrupt ones (exit 1 if any)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from mirror.cache.store import ContentStore
    from mirror.cache.verify import verify_store

    cfg = _load(config)
    store = ContentStore(cfg.cache.root, create=False)
    total = sum(blob.size for blob in store.blobs())
    console = Console(stderr=True)
    with Progress(
        "verify",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=console,
    ) as bars:
        task = bars.add_task("verify", total=total)
        report = verify_store(store, lambda done: bars.advance(task, done))
    console.print(f"checked {report.checked} blobs, {report.bytes_checked} bytes")
    for digest, actual in report.corrupt:
        console.print(
            f"[red]corrupt[/red] {digest}: content hashes to {actual}; moved to "
            f"{store.quarantine_dir}"
        )
    raise typer.Exit(1 if report.corrupt else 0)


@_command()
def gc(
    max_size: Annotated[
        Optional[str],
        typer.Option(help="Evict cached images until the cache is at most this size, e.g. 500G."),
    ] = None,
    older_than: Annotated[
        Optional[str],
        typer.Option(help="Only evict images last used longer ago than this, e.g. 30d."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print what would go; delete nothing.")] = False,
    config: ConfigOption = None,
) -> None:
    """Remove abandoned uploads and blobs nothing references any more; with --max-size,
    evict the least recently pulled cached images (never local or pinned ones, never a
    blob a kept image references) until the cache fits."""
    import time

    from mirror.cache import gc as gc_module
    from mirror.cache.open_cache import open_cache
    from mirror.proxy.routing import Router
    from mirror.units import parse_age, parse_size

    cfg = _load(config)
    router = Router(cfg)
    pins = [_resolve_pin(router, pin, cfg.source) for pin in cfg.cache.pins]
    rules = gc_module.GcRules(
        upload_ttl=cfg.local.upload_ttl_hours * 3600,
        max_size=parse_size(max_size) if max_size is not None else None,
        older_than=parse_age(older_than) if older_than else None,
        is_local=router.is_local,
        pinned=lambda image: any(pin(image) for pin in pins),
    )
    with open_cache(cfg.cache, create=False) as cache:
        result = gc_module.plan(cache.store, cache.pulls, rules, time.time())
        if not dry_run:
            gc_module.apply(cache.store, result, cache.metadata)
    for line in gc_module.report(result, rules.max_size, dry_run):
        typer.echo(line)


def _resolve_pin(router, pin: str, source: str):
    """A predicate matching the images a pin names: a repository, or one tag or digest."""
    from mirror.reference import ImageRef

    has_reference = "@" in pin or ":" in pin.rsplit("/", 1)[-1]
    ref = ImageRef.parse(pin)
    try:
        repo = router.route(ref.path)
    except MirrorError as exc:  # e.g. a prefix no upstream has
        raise InvalidValue(f"{source}: cache.pins: {pin!r}: {exc.message}") from None
    return lambda image: (
        image.repo == repo and (not has_reference or image.reference == ref.reference)
    )


if __name__ == "__main__":  # pragma: no cover
    app()
