"""Peak memory (wait4's ru_maxrss of the job's process): big inputs, and bombs refused.

- scale: 100,000 rows sent for real (and a million with --million-real), a million dry-run.
- workbook (issue 12): a 100,000-row .xlsx read whole, through a --dry-run.
- zip bomb (issue 10): a workbook of a few MB whose sheet inflates to 1 GiB, declared honestly
  in the zip, or declared as 8 MiB (a lie only inflating shows).
- gzip bomb (issue 10): every create answered with gzip that inflates to 1 GiB.
Bombs are compared with the same job on harmless input in the same run: bounded memory means
the bomb costs no more than a small margin over that.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import openpyxl

from benchmarks.harness import (
    ENV,
    HEADER,
    JobRun,
    Result,
    emulator,
    input_row,
    make_input,
    run_job,
)

# Targets, each with its reason.
MEMORY_MB = 250  # a CSV streams: no run of any length should need more than this
WORKBOOK_MEMORY_MB = 300  # issue 12: a 100,000-row workbook reads in well under 300 MB
BOMB_MARGIN_MB = 32  # one 1 MiB read buffer and zlib's window, with room for the allocator
GZIP_TIME_LIMIT = 30.0  # the default --timeout: a client reading a bomb to its end would take it
REFUSED = 2  # exit code: nothing sent (input refused)
ROWS_FAILED = (1, 3)  # exit codes: rows failed; or the run stopped on a streak of failures

# The bomb workbooks.
GIB = 1024 * 1024 * 1024
BOMB_ROW = (
    b'<row><c t="inlineStr"><is><t>IG00000000000000000000000000000001</t></is></c>'
    b'<c t="inlineStr"><is><t>Onboarding</t></is></c></row>'
)
BOMB_CHUNK = BOMB_ROW * (1024 * 1024 // len(BOMB_ROW))  # about 1 MiB of rows, written at once
LIED_SIZE = 8 * 1024 * 1024  # what the lying zip declares: a plausible sheet, under every cap
SHEET = "xl/worksheets/sheet1.xml"
LOCAL_HEADER = b"PK\x03\x04"
CENTRAL_HEADER = b"PK\x01\x02"
LOCAL_SIZE_AT = 22  # offsets of "uncompressed size" in the zip headers (APPNOTE 4.3.7, 4.3.12)
CENTRAL_SIZE_AT = 24
CENTRAL_NAME_LENGTH_AT = 28
CENTRAL_NAME_AT = 46


def scale(work: Path, rows: int = 100_000) -> list[Result]:
    """A real run of `rows` rows against the emulator, no latency, no rate: peak RSS."""
    source = make_input(work / "scale.csv", rows)
    with emulator(work) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", "0", "--lookup-lag", "0")
    seconds, peak = job.process.seconds, job.process.peak_mb
    print(
        f"scale: {rows:,} rows in {seconds:.1f} s, peak RSS {peak:.0f} MB, exit {job.process.exit_code}"
    )
    return [
        Result(
            f"scale: {rows:,} rows sent, no latency, --rate 0",
            f"peak RSS {peak:.0f} MB; {rows / seconds:,.0f} rows/s whole process "
            f"({job.created:,} created, exit {job.process.exit_code})",
            f"< {MEMORY_MB} MB",
            peak < MEMORY_MB and job.process.exit_code == 0 and job.created == rows,
        )
    ]


def million(work: Path, real: bool) -> list[Result]:
    """A million-row CSV through --dry-run (and sent, with --million-real): peak RSS."""
    rows = 1_000_000
    source = make_input(work / "million.csv", rows)
    size = source.stat().st_size / 1e6
    job = run_job(source, work, "--dry-run")
    seconds, peak = job.process.seconds, job.process.peak_mb
    print(f"million, dry run: {seconds:.1f} s, peak RSS {peak:.0f} MB ({size:.0f} MB input)")
    results = [
        Result(
            f"scale: {rows:,} rows ({size:.0f} MB CSV), --dry-run",
            f"peak RSS {peak:.0f} MB; {seconds:.0f} s (exit {job.process.exit_code})",
            f"< {MEMORY_MB} MB",
            peak < MEMORY_MB and job.process.exit_code == 0,
        )
    ]
    return results + (scale(work, rows) if real else [])


def write_workbook(path: Path, rows: int) -> Path:
    """An .xlsx of generated rows, every cell text (openpyxl's streaming writer)."""
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Customers")
    sheet.append(HEADER)
    for n in range(rows):
        sheet.append(input_row(n))
    workbook.save(path)
    return path


def workbook(work: Path) -> list[Result]:
    """A 100,000-row workbook read whole (--dry-run, credentials in the environment)."""
    rows = 100_000
    source = write_workbook(work / "customers.xlsx", rows)
    size = source.stat().st_size / 1e6
    job = run_job(source, work, "--dry-run", env=ENV)
    seconds, peak = job.process.seconds, job.process.peak_mb
    read = int(job.summary.get("rows", 0))
    print(f"workbook: {rows:,} rows ({size:.1f} MB), {seconds:.1f} s, peak RSS {peak:.0f} MB")
    return [
        Result(
            f"workbook: {rows:,}-row .xlsx ({size:.1f} MB), --dry-run",
            f"peak RSS {peak:.0f} MB; {read:,} rows read, {seconds:.0f} s whole process "
            f"(exit {job.process.exit_code})",
            f"< {WORKBOOK_MEMORY_MB} MB",
            peak < WORKBOOK_MEMORY_MB and read == rows and job.process.exit_code == 0,
        )
    ]


def write_zip_bomb(small: Path, path: Path, inflated: int) -> Path:
    """`small`'s workbook with its sheet grown to `inflated` bytes of identical rows."""
    with zipfile.ZipFile(small) as original:
        sheet = original.read(SHEET)
        head, _, tail = sheet.partition(b"</sheetData>")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
            for entry in original.infolist():
                if entry.filename != SHEET:
                    bomb.writestr(entry, original.read(entry))
            with bomb.open(SHEET, "w") as part:
                part.write(head)
                for _ in range(inflated // len(BOMB_CHUNK)):
                    part.write(BOMB_CHUNK)
                part.write(b"</sheetData>" + tail)
    return path


def declare_size(path: Path, part: str, size: int) -> None:
    """Make both of the zip's headers for `part` say it inflates to `size` bytes (a lie)."""
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(part).header_offset
    data = bytearray(path.read_bytes())
    if data[local : local + len(LOCAL_HEADER)] != LOCAL_HEADER:
        raise RuntimeError(f"no local header for {part} at {local}")
    struct.pack_into("<I", data, local + LOCAL_SIZE_AT, size)
    name = part.encode()
    at = data.rfind(CENTRAL_HEADER)
    while at >= 0:
        (length,) = struct.unpack_from("<H", data, at + CENTRAL_NAME_LENGTH_AT)
        if data[at + CENTRAL_NAME_AT : at + CENTRAL_NAME_AT + length] == name:
            struct.pack_into("<I", data, at + CENTRAL_SIZE_AT, size)
            path.write_bytes(data)
            return
        at = data.rfind(CENTRAL_HEADER, 0, at)
    raise RuntimeError(f"no central directory entry for {part}")


def _refused(name: str, job: JobRun, baseline: JobRun, size: float, work: Path) -> Result:
    peak, floor = job.process.peak_mb, baseline.process.peak_mb
    lines = job.process.stderr.replace(f"{work}/", "").splitlines()
    # Error lines may start with a timestamp (for cron logs): keep what follows "error:".
    said = next((line[line.index("error:") :] for line in lines if "error:" in line), "(none)")
    print(f"{name}: exit {job.process.exit_code}, peak RSS {peak:.0f} MB; {said}")
    return Result(
        name,
        f"exit {job.process.exit_code} in {job.process.seconds:.1f} s, peak RSS {peak:.0f} MB vs "
        f"{floor:.0f} MB for a 10-row workbook ({size:.1f} MB file); it says `{said}`",
        f"refused (exit {REFUSED}), within {BOMB_MARGIN_MB} MB of the 10-row run",
        job.process.exit_code == REFUSED and peak <= floor + BOMB_MARGIN_MB,
    )


def zip_bomb(work: Path) -> list[Result]:
    """Workbooks that inflate to 1 GiB, declared or not: refused, within bounded memory."""
    small = write_workbook(work / "small.xlsx", 10)
    baseline = run_job(small, work, "--dry-run")
    honest = write_zip_bomb(small, work / "honest-bomb.xlsx", GIB)
    lying = write_zip_bomb(small, work / "lying-bomb.xlsx", GIB)
    declare_size(lying, SHEET, LIED_SIZE)
    inflated = f"{GIB // (1024 * 1024):,} MiB"
    return [
        _refused(
            f"zip bomb: .xlsx whose sheet inflates to {inflated}, declared",
            run_job(honest, work, "--dry-run", expect=(REFUSED,)),
            baseline,
            honest.stat().st_size / 1e6,
            work,
        ),
        _refused(
            f"zip bomb: .xlsx whose sheet inflates to {inflated}, declared as "
            f"{LIED_SIZE // (1024 * 1024)} MiB",
            run_job(lying, work, "--dry-run", expect=(REFUSED,)),
            baseline,
            lying.stat().st_size / 1e6,
            work,
        ),
    ]


def gzip_bomb(work: Path) -> list[Result]:
    """Every create answered with gzip inflating to 1 GiB: rows fail fast, memory stays flat."""
    from tests.hostile import GIB as HOSTILE_GIB
    from tests.hostile import HostileServer, gzip_bomb_reply

    rows = 100
    source = make_input(work / "gzip.csv", rows)
    flags = ("--rate", "0", "--lookup-lag", "0")
    with emulator(work) as api:
        baseline = run_job(source, work, "--base-url", api.url, *flags)
    with HostileServer() as server:
        server.always("/v2/WebChats", gzip_bomb_reply(inflated=HOSTILE_GIB))
        job = run_job(source, work, "--base-url", server.url, *flags, expect=ROWS_FAILED)
        creates = sum(1 for request in server.received if request.path == "/v2/WebChats")
    counts = job.summary.get("counts", {})
    peak, floor, seconds = job.process.peak_mb, baseline.process.peak_mb, job.process.seconds
    causes = ", ".join(f"{c['code']} {c['count']}" for c in job.summary.get("causes", []))
    print(
        f"gzip bomb: exit {job.process.exit_code} in {seconds:.1f} s, peak RSS {peak:.0f} MB; {counts}"
    )
    # Every row ends failed, or not attempted when the run stops on a streak of the same failure.
    settled = counts.get("failed", 0) + counts.get("not_attempted", 0) == rows
    stop = job.summary.get("stop_reason") or "none"
    return [
        Result(
            f"gzip bomb: {rows} rows, each create answered with gzip inflating to 1 GiB",
            f"exit {job.process.exit_code} in {seconds:.1f} s: {counts.get('created', 0)} created, "
            f"{counts.get('failed', 0)} failed, {counts.get('not_attempted', 0)} not attempted "
            f"({causes}; stop reason: {stop}); {creates} creates sent; peak RSS {peak:.0f} MB vs "
            f"{floor:.0f} MB for the same rows answered normally",
            f"none created, every row failed or not attempted, exit 1 or 3, < {GZIP_TIME_LIMIT:g} s, "
            f"within {BOMB_MARGIN_MB} MB of the normal run",
            counts.get("created") == 0
            and settled
            and job.process.exit_code in ROWS_FAILED
            and seconds < GZIP_TIME_LIMIT
            and peak <= floor + BOMB_MARGIN_MB,
        )
    ]
