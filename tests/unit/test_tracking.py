import numpy as np
import pytest

from torchyard.tracking import context as ctx
from torchyard.tracking import journal as j


def test_offline_run_prints(capsys):
    run = ctx.OfflineRun()
    run.log("loss", 0.5, step=2)
    run.tag("k", "v")
    assert "[torchyard offline] metric loss = 0.5 (step 2)" in capsys.readouterr().out


def test_live_run_writes_journal(tmp_path, monkeypatch):
    env = {"TORCHYARD_RUN_ID": "r", "TORCHYARD_JOURNAL_DIR": str(tmp_path / "j"), "RANK": "2",
           "TORCHYARD_UPLOAD_DIR": str(tmp_path / "up")}
    run = ctx.LiveRun(env)
    run.log("a", 1)
    run.log("b", np.float32(2.5), step=3)
    run.log("c", True)
    run.log("d", "text")
    run.log_list("l", [np.int64(1), 2.0])
    run.tag("t")
    run.add_properties({"p": 1})
    src = tmp_path / "f.txt"
    src.write_text("x")
    run.upload_file("outputs/f.txt", str(src))
    with pytest.raises(TypeError, match="unsupported value type"):
        run.log("bad", {"x": 1})
    with pytest.raises(TypeError, match="more than one element"):
        run.log("bad", np.array([1.0, 2.0]))
    run.flush()
    series, records = j.JournalReader(str(tmp_path / "j" / "rank_2.journal")).read_new()
    assert [(s[0], s[1], s[2]) for s in series] == [("a", [1], [None]), ("b", [2.5], [3]), ("c", [1], [None])]
    kinds = [(r[0], r[1], r[2], r[3]) for r in records]
    assert kinds == [
        (j.STRING, "d", "text", None), (j.LIST, "l", [1, 2.0], None), (j.TAG, "t", "", None), (j.PROPERTY, "p", "1", None),
    ]
    assert (tmp_path / "up" / "outputs" / "f.txt").read_text() == "x"
    with pytest.raises(ValueError, match="inside the run"):
        run.upload_file("../escape", str(src))
