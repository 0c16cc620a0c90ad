import json

from torchyard.runtime.summary import shape_metrics


def row(name, value=None, payload=None, kind=0, rank=0, step=None):
    return (name, rank, step, value, None if payload is None else json.dumps(payload), kind, 0.0)


def test_azure_shapes():
    rows = [
        row("once", 1.5),
        row("many", 1.0), row("many", 2.0),
        row("s", payload="hello", kind=5),
        row("lst", payload=[1, 2, 3], kind=1),
        row("r", payload={"epoch": 1, "acc": 0.5}, kind=2), row("r", payload={"epoch": 2, "acc": 0.7}, kind=2),
        row("t", payload={"a": [1, 2]}, kind=3),
        row("img", payload="images/img_0_1.png", kind=4),
    ]
    assert shape_metrics(rows) == {
        "once": 1.5,
        "many": [1.0, 2.0],
        "s": "hello",
        "lst": [1, 2, 3],
        "r": {"epoch": [1, 2], "acc": [0.5, 0.7]},
        "t": {"a": [1, 2]},
        "img": "images/img_0_1.png",
    }
