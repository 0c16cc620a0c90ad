"""The CLI's output options (--output/-o table|json|yaml, --json), its colours (NO_COLOR, non-TTY) and its
shell completion, made from the real parser."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess

import pytest
import yaml

from torchyard.cli.common import emit, iso_utc, print_json, print_yaml, table, utc_key, with_utc
from torchyard.cli.completion import bash_script, fish_script, tree, zsh_script
from torchyard.cli.main import _parser

ANSI = re.compile(r"\x1b\[")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_command_with_json_also_takes_output() -> None:
    """--json is an alias of -o json wherever it is offered (run and submit too: there -o json or yaml
    also means no streamed output)."""
    missing = [" ".join(path) for path, p in _leaves(_parser())
               if "--json" in _flags(p) and not {"--output", "-o"} <= _flags(p)]
    assert not missing, f"--json without --output: {missing}"


@pytest.mark.parametrize("argv, expected", [
    (["runs", "list"], "table"),
    (["runs", "list", "--json"], "json"),
    (["runs", "list", "-o", "yaml"], "yaml"),
    (["runs", "list", "--output", "json"], "json"),
    (["metrics", "x", "-o", "json"], "json"),
    (["model", "list", "--json"], "json"),
    (["endpoint", "show", "e"], "json"),  # JSON was its only output before --output: it stays the default
    (["compute", "show", "local"], "json"),
    (["compute", "show", "local", "-o", "table"], "table"),
    (["sweep", "show", "x", "-o", "yaml"], "yaml"),
    (["service", "list", "-o", "json"], "json"),
])
def test_output_flags_parse(argv: list[str], expected: str) -> None:
    assert _parser().parse_args(argv).output == expected


def test_an_unknown_output_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["runs", "list", "-o", "xml"])
    assert exc.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


def test_emit_prints_one_shape_in_json_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    obj = [{"run_id": "r1", "loss": float("inf"), "acc": float("nan"), "created_at": 0.0, "tags": {"a": "1"},
            "shape": (2, 3)}]
    rendered: list[bool] = []
    emit(argparse.Namespace(output="json"), obj, lambda: rendered.append(True))
    as_json = json.loads(capsys.readouterr().out)
    assert as_json == [{"run_id": "r1", "loss": "Infinity", "acc": "NaN", "created_at": 0.0, "tags": {"a": "1"},
                        "shape": [2, 3]}]
    emit(argparse.Namespace(output="yaml"), obj, lambda: rendered.append(True))
    as_yaml = yaml.safe_load(capsys.readouterr().out)
    assert as_yaml[0]["loss"] == float("inf") and as_yaml[0]["acc"] != as_yaml[0]["acc"]  # .inf, .nan
    assert {k: v for k, v in as_yaml[0].items() if k not in ("loss", "acc")} == \
        {k: v for k, v in as_json[0].items() if k not in ("loss", "acc")}
    assert not rendered
    emit(argparse.Namespace(output="table"), lambda: pytest.fail("made for table"), lambda: rendered.append(True))
    emit(argparse.Namespace(), obj, lambda: rendered.append(True))  # a parser without --output: the table
    assert rendered == [True, True]


def test_json_and_yaml_write_to_a_given_stream() -> None:
    out = io.StringIO()
    print_json({"a": 1}, file=out)
    print_yaml({"b": [1, 2]}, file=out)
    assert out.getvalue() == '{\n  "a": 1\n}\nb:\n- 1\n- 2\n'


def test_iso_times_sit_beside_epoch_ones() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1765140000.5) == "2025-12-07T20:40:00.500Z"
    assert iso_utc(None) is None and iso_utc("x") is None  # type: ignore[arg-type]
    assert [utc_key(k) for k in ("created_at", "last_used", "ts")] == ["created_utc", "last_used_utc", "ts_utc"]
    record = {"created_at": 0, "ended_at": None, "started_utc": "kept"}
    assert with_utc(record, "created_at", "ended_at", "started_at", "missing") == \
        {"created_at": 0, "created_utc": "1970-01-01T00:00:00.000Z", "ended_at": None, "ended_utc": None,
         "started_utc": "kept"}
    assert record == {"created_at": 0, "ended_at": None, "started_utc": "kept"}  # not changed in place


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _table_on(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("sys.stdout", stream)
    table("runs", ["run id", "status"], [["r_1", "Completed"]])
    return stream.getvalue()


def test_tables_on_a_terminal_have_styles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert ANSI.search(_table_on(_Terminal(), monkeypatch))


def test_no_color_means_no_ansi_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _table_on(_Terminal(), monkeypatch)
    assert "r_1" in out and "Completed" in out and not ANSI.search(out)


def test_not_a_terminal_means_no_ansi_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("FORCE_COLOR", "")
    out = _table_on(io.StringIO(), monkeypatch)
    assert "r_1" in out and not ANSI.search(out)


def test_sweep_table_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchyard.cli import sweep

    class Sweep:
        id = "sw_1"

        def get_children_sorted_by_primary_metric(self, top: int = 0) -> list[dict[str, object]]:
            return [{"run_id": "sw_1_0", "status": "Completed", "best_primary_metric": float("inf"),
                     "intervals": 3, "hyperparameters": {"lr": 0.1}}]

        def get_details(self) -> dict[str, object]:
            return {"status": "Completed", "properties": {}, "sweep": None}

        def get_primary_metric_config(self) -> dict[str, str]:
            return {"name": "loss", "goal": "MINIMIZE"}

        def get_children(self) -> list[object]:
            return [object()]

    monkeypatch.setenv("NO_COLOR", "1")
    out = _Terminal()
    sweep.show(Sweep(), out=out)
    assert "sw_1_0" in out.getvalue() and not ANSI.search(out.getvalue())
    as_json = io.StringIO()
    sweep.show(Sweep(), out=as_json, fmt="json")
    assert json.loads(as_json.getvalue())["trials"][0]["best_primary_metric"] == "Infinity"  # strict JSON


# ---- shell completion ------------------------------------------------------------------------------------


def _top_level() -> list[str]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_bash_completion_lists_every_top_level_command() -> None:
    script = bash_script(_parser())
    root = re.search(r'\["torchyard"\]="([^"]*)"', script)
    assert root is not None
    assert set(root.group(1).split()) == set(_top_level())
    assert "complete -o default -o bashdefault -F _torchyard torchyard" in script


def test_completion_covers_every_command_and_flag() -> None:
    nodes = tree(_parser())
    for path, parser in _leaves(_parser()):
        key = " ".join(path)
        assert key in nodes, key
        assert _flags(parser) <= set(nodes[key].flags), key
    assert nodes["runs list"].choices["--output"] == ["table", "json", "yaml"]
    fish = fish_script(_parser())
    assert "complete -c torchyard -n '__torchyard_at \\'runs list\\'' -l 'output' -x -a 'table json yaml'" in fish
    assert zsh_script(_parser()).startswith("#compdef torchyard\n")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
@pytest.mark.parametrize("words, expected", [
    (["torchyard", "ru"], {"run", "runs"}),
    (["torchyard", "runs", ""], {"list", "show", "repair"}),
    (["torchyard", "-w", "/tmp/ws", "runs", "l"], {"list"}),
    (["torchyard", "runs", "list", "--o"], {"--output"}),
    (["torchyard", "runs", "list", "-o", ""], {"table", "json", "yaml"}),
    (["torchyard", "completion", "z"], {"zsh"}),  # a positional's choices
    (["torchyard", "submit", ""], set()),  # a file: the shell's own completion
    (["torchyard", "--workspace", "runs", ""], set(_top_level())),  # "runs" is the folder's name there
])
def test_bash_completes_from_the_script(words: list[str], expected: set[str], tmp_path) -> None:
    script = tmp_path / "torchyard.bash"
    script.write_text(bash_script(_parser()))
    quoted = " ".join(f"'{w}'" for w in words)
    probe = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _torchyard; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert set(done.stdout.split()) == expected


# ---- waiting -----------------------------------------------------------------------------------------


class _Run:
    id = "r_1"

    def wait_for_completion(self, show_output: bool, raise_on_error: bool, ranks: object, on_status) -> dict[str, str]:
        for status in ("Queued", "Running", "Completed"):
            on_status(status)
        return {"status": "Completed"}


@pytest.mark.parametrize("no_color", [False, True])
def test_a_quiet_wait_on_a_terminal_shows_each_status(monkeypatch: pytest.MonkeyPatch, no_color: bool) -> None:
    from torchyard.cli.common import wait

    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    assert wait(_Run(), stream=False) == 0
    text = err.getvalue()
    for status in ("Queued", "Running", "Completed"):
        assert f"torchyard: r_1: {status}" in text
    assert bool(ANSI.search(text)) is not no_color  # the spinner draws on a terminal; NO_COLOR: plain lines


def test_a_quiet_wait_off_a_terminal_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchyard.cli.common import wait

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert wait(_Run(), stream=False) == 0
    assert err.getvalue().splitlines() == [f"torchyard: r_1: {s}" for s in ("Queued", "Running", "Completed", "Completed")]


def test_transfers_report_their_progress_and_the_bar_shows_only_on_a_terminal(tmp_path, monkeypatch) -> None:
    from torchyard.cli.common import transfer_progress
    from torchyard.data.datastore import Datastore

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(b"x" * (100 * (i + 1)))
    store = Datastore(name="here", kind="local", url=str(tmp_path / "store"))
    seen: list[tuple[str, int]] = []
    assert store.upload(src, "data", progress=lambda kind, value: seen.append((kind, value))) == 5
    assert seen[0] == ("files", 5) and sorted(v for k, v in seen[1:]) == [100, 200, 300, 400, 500]
    seen.clear()
    assert store.download(tmp_path / "back", "data", progress=lambda kind, value: seen.append((kind, value))) == 5
    assert seen[0] == ("files", 5) and sum(v for k, v in seen[1:]) == 1500
    monkeypatch.delenv("NO_COLOR", raising=False)
    with transfer_progress("x") as report:  # pytest's stderr is no terminal
        assert report is None
    terminal = _Terminal()
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr("sys.stderr", terminal)
    with transfer_progress("uploading") as report:
        assert report is not None
        report("files", 2)
        report("bytes", 10)
        report("bytes", 20)
    monkeypatch.setenv("NO_COLOR", "1")
    with transfer_progress("x") as report:
        assert report is None


def test_a_runs_artifacts_download_reports_progress(tmp_path) -> None:
    from torchyard import Workspace
    from torchyard.experiment import Experiment
    from torchyard.run import Run

    ws = Workspace(path=tmp_path / ".torchyard")
    ws.store.create_run(run_id="r1", experiment="e", spec_json="{}", compute_target="local",
                        run_dir=str(tmp_path / ".torchyard" / "runs" / "r1"), tags={})
    folder = tmp_path / ".torchyard" / "artifacts" / "r1" / "outputs"
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"x" * 10)
    (folder / "b.bin").write_bytes(b"x" * 20)
    seen: list[tuple[str, int]] = []
    paths = Run(Experiment(ws, "e"), "r1").download_files("outputs/", str(tmp_path / "dl"),
                                                          progress=lambda kind, value: seen.append((kind, value)))
    assert len(paths) == 2 and seen[0] == ("files", 2) and sum(v for k, v in seen[1:]) == 30
    ws.store.dispose()


def test_a_large_snapshot_reports_its_progress_and_a_small_one_does_not(tmp_path) -> None:
    from torchyard.workspace.snapshots import PROGRESS_BYTES, SnapshotStore

    src = tmp_path / "src"
    src.mkdir()
    (src / "small.py").write_text("pass\n")
    store = SnapshotStore(str(tmp_path / "snapshots"))
    seen: list[tuple[str, int]] = []
    store.take(src, progress=lambda kind, value: seen.append((kind, value)))
    assert seen == []  # a few bytes: no bar flashing by
    for i in range(20):
        (src / f"w{i}.bin").write_bytes(bytes([i]) * (PROGRESS_BYTES // 16))
    store.take(src, progress=lambda kind, value: seen.append((kind, value)))
    assert seen[0] == ("files", 21)  # every file read this time (the new ones and the small one's stat cache)
    assert sum(v for k, v in seen[1:]) == 20 * (PROGRESS_BYTES // 16) + 5 and len(seen) == 22


def test_the_agent_sends_a_large_snapshots_progress_and_the_cli_draws_it(tmp_path, monkeypatch) -> None:
    from torchyard.cli.jobs import _snapshot_progress

    class Chan:
        def __init__(self, messages):
            self.messages = list(messages)

        def recv(self):
            return self.messages.pop(0) if self.messages else None

    first = {"run_id": "r", "run_dir": "/x"}
    chan = Chan([{"progress": ["files", 2]}, {"progress": ["bytes", 10]}, {"progress": ["bytes", 20]}, first])
    assert _snapshot_progress(chan, "src") == first  # off a terminal: consumed quietly
    terminal = _Terminal()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr("sys.stderr", terminal)
    chan = Chan([{"progress": ["files", 2]}, {"progress": ["bytes", 10]}, {"progress": ["bytes", 20]}, first])
    assert _snapshot_progress(chan, "src") == first
    assert "snapshotting src" in terminal.getvalue()
