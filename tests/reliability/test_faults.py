"""Injected faults through the real CLI: SIGKILL, a full disk, unwritable outputs, a stats file
replaced while read, a closed pipe. Nothing partial is ever left at a target."""
from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, Result, run_cli
from normcli import errors, statsfile
from reliability.helpers import assert_error, fit, no_leftovers, zscore

ROWS = 600_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A CSV of about 15 MB and its stats."""
    d = tmp_path_factory.mktemp("big")
    x = np.random.default_rng(3).normal(50.0, 7.0, ROWS)
    with open(d / "big.csv", "w") as f:
        f.write("id,x\n")
        f.write("".join(f"r{i},{v:.6f}\n" for i, v in enumerate(x)))
    fit(d / "big.csv", d / "s.json")
    return d


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _run_child(preexec, *args, stdin: bytes | None = None, env: dict | None = None) -> Result:
    """``python -m normcli ARGS`` in a child that runs ``preexec`` first (to set a limit)."""
    p = subprocess.run([sys.executable, "-m", "normcli", *map(str, args)], input=stdin, capture_output=True,
                       preexec_fn=preexec, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=120)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def _run_limited(limit: int, *args) -> tuple[int, str]:
    r = _run_child(_limit_file_size(limit), *args)
    return r.code, r.err


def test_sigkill_mid_transform_leaves_no_target_and_the_next_run_succeeds(big, tmp_path):
    target = tmp_path / "out.csv"
    p = subprocess.Popen([sys.executable, "-m", "normcli", "transform", big / "big.csv", "--stats", big / "s.json",
                          "-o", target], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "NORMCLI_THREADS": "1", "NORMCLI_BLOCK_SIZE": "65536"})
    deadline = time.monotonic() + 60
    tmp = []
    while time.monotonic() < deadline and p.poll() is None:
        tmp = list(tmp_path.glob(".out.csv.*.normcli-tmp"))
        if tmp and tmp[0].stat().st_size > (1 << 20):
            break
        time.sleep(0.005)
    assert p.poll() is None, "finished before the kill"
    p.kill()
    p.wait(timeout=30)
    assert not target.exists()
    assert len(tmp) == 1 and tmp[0].exists()  # SIGKILL cannot clean up: the temporary is left
    # The next run ignores the leftover and succeeds; a directory scan skips it as a dot file.
    r = run_cli("transform", big / "big.csv", "--stats", big / "s.json", "-o", target)
    assert r.code == 0, r.err
    src = pd.read_csv(big / "big.csv")
    got = pd.read_csv(target)
    assert got["id"].tolist() == src["id"].tolist()
    np.testing.assert_allclose(got["x"], zscore(src["x"].to_numpy()), rtol=1e-9, atol=1e-12)
    assert tmp[0].exists()
    r = run_cli("fit", tmp_path, "--columns", "x", "--quiet")
    assert r.code == 0, r.err
    assert json.loads(r.text)["fitted_on"]["rows"] == ROWS


@pytest.mark.parametrize("out", ["out.csv", "out.parquet"])
def test_disk_full_is_exit_5_without_partial_output(big, tmp_path, out):
    code, err = _run_limited(256 << 10, "transform", big / "big.csv", "--stats", big / "s.json", "-o", tmp_path / out)
    assert code == 5, err
    assert err.count("\n") == 1 and err.startswith(f"Error: cannot write '{tmp_path / out}'"), err
    assert "File too large" in err
    no_leftovers(tmp_path)


def test_disk_full_while_saving_stats(big, tmp_path):
    stats = tmp_path / "s.json"
    stats.write_text("old")
    code, err = _run_limited(64, "fit", big / "big.csv", "-o", stats)
    assert code == 5 and err.count("\n") == 1 and "File too large" in err, err
    assert stats.read_text() == "old"  # the existing target is untouched
    no_leftovers(tmp_path, "s.json")


def test_missing_or_unwritable_output_directory(big, tmp_path):
    (tmp_path / "plain").write_text("a regular file")
    missing, under_file = tmp_path / "missing" / "o.csv", tmp_path / "plain" / "s.json"
    r = run_cli("transform", big / "big.csv", "--stats", big / "s.json", "-o", missing)
    assert_error(r, 5, f"cannot write '{missing}'", "No such file or directory")
    assert_error(run_cli("fit", big / "big.csv", "-o", under_file), 5, f"cannot write '{under_file}'", "Not a directory")
    no_leftovers(tmp_path, "plain")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(big, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run_cli("transform", big / "big.csv", "--stats", big / "s.json", "-o", ro / "o.csv")
        assert_error(r, 5, "Permission denied")
    finally:
        ro.chmod(0o755)


def test_stats_file_replaced_while_read(tmp_path):
    """A writer saves two different stats files in a loop; readers only ever see one of them."""
    (tmp_path / "a.csv").write_text("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(50)))
    (tmp_path / "b.csv").write_text("x,y\n" + "".join(f"{-i},{3 * i}\n" for i in range(4000)))
    fit(tmp_path / "a.csv", tmp_path / "a.json", "--method", "robust")
    fit(tmp_path / "b.csv", tmp_path / "b.json", "--method", "robust")
    versions = [statsfile.load(str(tmp_path / n)) for n in ("a.json", "b.json")]
    expected = [statsfile.to_dict(v)["columns"] for v in versions]
    assert expected[0] != expected[1]
    target = tmp_path / "s.json"
    statsfile.save(versions[0], str(target))
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        while not stop.is_set():
            statsfile.save(versions[writes[0] % 2], str(target))
            writes[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            cols = statsfile.to_dict(statsfile.load(str(target)))["columns"]
            assert cols in expected
            seen.add(expected.index(cols))
        for _ in range(1):  # a reader through the real process
            r = run_cli("inspect", target, "--json")
            assert r.code == 0, r.err
            assert json.loads(r.text)["columns"] in expected
    finally:
        stop.set()
        thread.join()
    assert writes[0] > 20 and seen == {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json", "b.csv", "b.json", "s.json"]


@pytest.mark.parametrize("producer,consumer", [
    ("{n} transform big.csv --stats s.json", "head -1"),
    ("cat big.csv | {n} transform - --stats s.json --to tsv", "head -c 100"),
    ("{n} inverse big.csv --stats s.json --to parquet", "head -c 100"),
])
def test_sigpipe_from_head_is_quiet_success(big, producer, consumer):
    producer = producer.format(n=f"{sys.executable} -m normcli")
    cmd = f"{producer} 2>err.txt | {consumer} >/dev/null; echo ${{PIPESTATUS[@]}}"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=big, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    statuses = p.stdout.decode().split()
    # normcli's own status (a `cat` feeding it may itself die of SIGPIPE once normcli stops reading)
    assert statuses[producer.count("|")] == "0" and statuses[-1] == "0", p.stdout
    assert (big / "err.txt").read_text() == ""


def test_fit_transform_into_a_closed_pipe_still_writes_its_stats_file(big, tmp_path):
    """`fit-transform big.csv --stats-out s.json | head -1` ends with status 0, as a closed pipe
    does: so the statistics, fitted whole, must be in place (they were left unwritten)."""
    out = tmp_path / "fs.json"
    cmd = f"{sys.executable} -m normcli fit-transform {big / 'big.csv'} --stats-out {out} 2>err.txt | head -1 >/dev/null; " \
          "echo ${PIPESTATUS[@]}"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.decode().split() == ["0", "0"] and (tmp_path / "err.txt").read_text() == ""
    got = statsfile.to_dict(statsfile.load(str(out)))["columns"]
    assert got == statsfile.to_dict(statsfile.load(str(big / "s.json")))["columns"]  # fit's own statistics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.txt", "fs.json"]  # no temporary file


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [
    ["transform", "small.csv", "--stats", "small.json"],
    ["transform", "small.csv", "--stats", "small.json", "--to", "parquet"],
    ["fit", "small.csv"],
    ["inspect", "small.json"],
    ["inspect", "small.json", "--json"],
    ["check", "small.csv", "--stats", "small.json"],
    ["check", "small.csv", "--stats", "small.json", "--json"],
    ["export", "small.json", "--to", "sql"],
    ["--version"],
    ["--help"],
    ["fit", "--help"],
])
def test_full_stdout_is_exit_5_with_one_line(tmp_path, args):
    """`> /dev/full`: a small output is written only when stdout is flushed, yet it must fail."""
    (tmp_path / "small.csv").write_text("x,y\n1,a\n2,b\n3,c\n")
    fit(tmp_path / "small.csv", tmp_path / "small.json")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "normcli", *args], stdout=full, stderr=subprocess.PIPE,
                           cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 5, p.stderr
    assert p.stderr.decode() == "Error: cannot write standard output: No space left on device\n"


@pytest.mark.parametrize("args", ["--version", "--help", "transform --help", "inspect small.json",
                                  "check small.csv --stats small.json"])
def test_a_reader_that_reads_nothing_is_quiet_success_for_every_text_output(tmp_path, args):
    """`| head -c 0` closes the pipe before the first byte: help, version and Rich's tables end
    with status 0 and nothing on stderr, as the data commands do (Rich's own reaction is exit 1)."""
    (tmp_path / "small.csv").write_text("x,y\n1,a\n2,b\n3,c\n")
    fit(tmp_path / "small.csv", tmp_path / "small.json")
    cmd = f"{sys.executable} -m normcli {args} 2>err.txt | head -c 0; echo ${{PIPESTATUS[@]}}"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.decode().split() == ["0", "0"] and (tmp_path / "err.txt").read_text() == ""
    closed = subprocess.run(["bash", "-c", f"{sys.executable} -m normcli {args} >&-"], capture_output=True,
                            cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert closed.returncode == 5 and closed.stderr.decode() == "Error: cannot write standard output: the stream is closed\n"


@pytest.mark.parametrize("where", ["sink", "stats"])
def test_a_signal_between_a_temporary_files_creation_and_its_output_leaves_nothing(tmp_path, monkeypatch, capsys, where):
    """SIGTERM just after the temporary file is made, before the output that renames or removes
    it has taken charge of it: the run still exits 143 and leaves no file behind."""
    from normcli import cli, errors
    from normcli.io import outfile

    src = tmp_path / "d.csv"
    src.write_text("x\n1\n2\n")
    fit(src, tmp_path / "s.json")
    made = outfile.temp_beside

    def interrupted(*args, **kwargs):
        made(*args, **kwargs)
        raise errors.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(outfile, "temp_beside", interrupted)
    if where == "sink":
        args = ["transform", str(src), "--stats", str(tmp_path / "s.json"), "-o", str(tmp_path / "o.csv")]
    else:
        args = ["fit", str(src), "-o", str(tmp_path / "t.json")]
    assert cli.main(args) == errors.EXIT_SIGTERM
    assert capsys.readouterr().err.count("\n") == 1
    no_leftovers(tmp_path, "d.csv", "s.json")


def _run_with_memory(limit: int, *args, stdin: bytes | None = None, env: dict | None = None) -> Result:
    """``python -m normcli ARGS`` with its address space limited to ``limit`` bytes (``ulimit -v``)."""
    return _run_child(lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)), *args, stdin=stdin, env=env)


@pytest.mark.parametrize("how", ["file", "gzip", "stdin"])
def test_a_small_stats_file_is_read_under_a_memory_limit(tmp_path, how):
    # 900 MB of address space: ample for inspect (it runs in under 400 MB), too little for a read
    # that first allocates the 1 GiB a stats file may hold.
    src = tmp_path / "d.csv"
    pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) ** 2}).to_csv(src, index=False)
    stats = tmp_path / "s.json"
    fit(src, stats)
    expected = run_cli("inspect", stats)
    assert expected.code == 0
    if how == "gzip":
        stats.with_suffix(".json.gz").write_bytes(gzip.compress(stats.read_bytes()))
        r = _run_with_memory(900 << 20, "inspect", stats.with_suffix(".json.gz"))
    elif how == "stdin":
        r = _run_with_memory(900 << 20, "inspect", "-", stdin=stats.read_bytes())
    else:
        r = _run_with_memory(900 << 20, "inspect", stats)
    assert (r.code, r.err) == (0, "")
    table = "┏".encode()
    assert table in expected.out  # the same table (the title above it names the file)
    assert r.out[r.out.index(table):] == expected.out[expected.out.index(table):]


def test_running_out_of_memory_is_one_line_and_exit_5_and_leaves_nothing(tmp_path):
    # The CSV reader's buffer of a 1 GiB piece in 1.2 GiB of address space, where Python, NumPy and
    # pyarrow already take about 300 MB: MemoryError, deterministically (the run takes under 1 GB).
    src = tmp_path / "d.csv"
    pd.DataFrame({"a": np.arange(50.0)}).to_csv(src, index=False)
    stats = tmp_path / "s.json"
    fit(src, stats)
    out = tmp_path / "out"
    out.mkdir()
    r = _run_with_memory(int(1.2 * (1 << 30)), "transform", src, "--stats", stats, "-o", out / "t.csv",
                         env={"NORMCLI_BLOCK_SIZE": str(1 << 30)})
    assert_error(r, errors.EXIT_IO, "out of memory")
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def big_gz_input(tmp_path_factory):
    """A CSV of a million rows and its stats: compressing its transform takes seconds of CPU."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    d = tmp_path_factory.mktemp("cpu")
    rng = np.random.default_rng(3)
    pacsv.write_csv(pa.table({c: rng.normal(size=1_000_000) for c in "xyz"}), d / "d.csv")
    fit(d / "d.csv", d / "s.json")
    return d / "d.csv", d / "s.json"


def test_a_soft_cpu_time_limit_stops_the_run_with_one_line_and_leaves_nothing(big_gz_input, tmp_path):
    src, stats = big_gz_input

    def preexec() -> None:
        signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # not ignored, whatever this process inherited
        resource.setrlimit(resource.RLIMIT_CPU, (1, 60))  # `ulimit -S -t 1`: SIGXCPU after a CPU second

    r = _run_child(preexec, "transform", src, "--stats", stats, "-o", tmp_path / "o.csv.gz")
    assert_error(r, errors.EXIT_SIGXCPU, "interrupted by SIGXCPU")
    assert list(tmp_path.iterdir()) == []


def test_a_polars_panic_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    # pyo3's PanicException derives from BaseException only (Polars panics on, for one, a thread
    # it cannot spawn under a memory limit): still the one line of an internal error.
    from polars.exceptions import PanicException

    from normcli import api, cli

    src = tmp_path / "d.csv"
    src.write_text("x\n1\n2\n")
    fit(src, tmp_path / "s.json")

    def panics(*args, **kwargs):
        raise PanicException("could not spawn threads")

    monkeypatch.setattr(api, "transform_paths", panics)
    code = cli.main(["transform", str(src), "--stats", str(tmp_path / "s.json"), "-o", str(tmp_path / "o.csv")])
    assert code == errors.EXIT_INTERNAL
    assert capsys.readouterr().err == "Error: internal error: a Polars panic: could not spawn threads\n"
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("name,value", [("NORMCLI_THREADS", "0"), ("NORMCLI_THREADS", "abc"), ("NORMCLI_THREADS", "10000"),
                                        ("NORMCLI_BLOCK_SIZE", "-5"), ("NORMCLI_BLOCK_SIZE", "1e9"),
                                        ("NORMCLI_BLOCK_SIZE", str((1 << 30) + 1))])
def test_a_bad_tuning_setting_is_a_usage_error_not_dropped(tmp_path, name, value):
    src = tmp_path / "d.csv"
    src.write_text("x\n1\n2\n")
    fit(src, tmp_path / "s.json")
    r = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv", env={name: value})
    assert_error(r, errors.EXIT_USAGE, name, repr(value))
    assert not (tmp_path / "o.csv").exists()
    ok = run_cli("transform", src, "--stats", tmp_path / "s.json", "-o", tmp_path / "o.csv", env={name: " 2 "})
    assert ok.code == 0, ok.err
