"""The documentation site (mkdocs.yml, docs/) and the README, its front door.

- Every fenced code block of README.md, BENCHMARKS.md and docs/**/*.md is executed by a named test
  (``<!-- run: tests/FILE.py::TEST -->`` right above it; the test must exist) or says why it cannot
  run here (``<!-- not run: WHY -->``).
- The YAML blocks marked for this file's test compile as ``torchyard submit`` would compile them.
- The reference pages the build generates (docs/hooks/reference.py) hold what the code declares:
  every flag, option, env variable, YAML field, route and public name.
- The README stays a front door: short, the two quick-start commands, links that resolve.

``mkdocs build --strict`` itself runs in scripts/test.sh (broken links and references fail it).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^\s*<!--\s*(run|not run):\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: tuple[str, str] | None  # ("run" | "not run", the rest)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, each with the marker comment right above it."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[:3]):
            j += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mm = MARKER.match(lines[k]) if k >= 0 else None
        found.append(Block(path, i + 1, lang, body, (mm.group(1), mm.group(2)) if mm else None))
        i = j + 1
    return found


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.rglob("*.md"))]


def all_blocks() -> list[Block]:
    return [b for p in markdown_files() for b in blocks(p)]


def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- code blocks ---------------------------------------------------------------------------------


def test_the_block_parser_sees_markers_and_fences(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- not run: a diagram -->\n```text\na\n```\n\n- item\n\n  ```python\n  x = 1\n  ```\n")
    found = blocks(page)
    assert [(b.lang, b.body, b.marker) for b in found] == [("text", "a", ("not run", "a diagram")),
                                                         ("python", "x = 1", None)]


def test_every_code_block_runs_or_says_why_not() -> None:
    missing, bad = [], []
    for b in all_blocks():
        if b.marker is None:
            missing.append(b.where())
            continue
        kind, rest = b.marker
        if kind == "not run":
            if len(rest) < 8:
                bad.append(f"{b.where()}: say why it cannot run here ({rest!r})")
            continue
        file, _, test = rest.partition("::")
        test_file = ROOT / file
        if not test_file.is_file() or not re.search(rf"^def {re.escape(test)}\(", test_file.read_text(), re.M):
            bad.append(f"{b.where()}: no test {rest!r}")
    assert not missing, ("blocks without <!-- run: tests/FILE.py::TEST --> or <!-- not run: WHY --> above them: "
                         + ", ".join(missing))
    assert not bad, "; ".join(bad)


def _marked_for(test: str, lang: str) -> list[Block]:
    return [b for b in all_blocks() if b.marker == ("run", f"tests/unit/test_docs.py::{test}") and b.lang == lang]


def test_yaml_blocks_compile() -> None:
    """The YAML job and sweep files of the docs compile as `torchyard submit` compiles them."""
    import yaml

    from torchyard.spec.yamljob import compile_command_job
    from torchyard.sweeps.yamlsweep import compile_sweep

    marked = _marked_for("test_yaml_blocks_compile", "yaml")
    assert marked, "no YAML block is marked for this test"
    for b in marked:
        data = yaml.safe_load(b.body)
        # a job file's `code: .` is the example's folder; a sweep's paths are from the repository's root
        base = ROOT / "examples" / "digits" if data.get("code") == "." else ROOT
        loaded = compile_sweep(data, str(base)) if data.get("type") == "sweep" else compile_command_job(data, str(base))
        assert loaded.spec is not None, b.where()


def test_toml_blocks_are_the_toy_targets_entry_point() -> None:
    """The entry point a compute-target package declares is the one the suite's toy target uses."""
    import tomllib

    toy = tomllib.loads((ROOT / "tests" / "plugins" / "toytarget-pkg" / "pyproject.toml").read_text())
    marked = _marked_for("test_toml_blocks_are_the_toy_targets_entry_point", "toml")
    assert marked
    for b in marked:
        declared = tomllib.loads(b.body)["project"]["entry-points"]["torchyard.compute"]
        assert declared == toy["project"]["entry-points"]["torchyard.compute"], b.where()


def test_python_blocks_are_python() -> None:
    """Blocks that are not run still parse: a typo in an example is caught here."""
    import ast

    wrong = []
    for b in all_blocks():
        if b.lang != "python" or "..." in b.body:  # fragments with `...` for the rest
            continue
        try:
            ast.parse(b.body)
        except SyntaxError as err:
            wrong.append(f"{b.where()}: {err}")
    assert not wrong, "; ".join(wrong)


# --- generated reference pages -------------------------------------------------------------------


def test_cli_reference_has_every_command_and_flag() -> None:
    from torchyard.cli.main import _parser

    page = hook().render_cli()

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in page, f"{' '.join(path)} {flag}"
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    assert f"`torchyard {' '.join([*path, name])}`" in page, name
                    walk(sub, [*path, name])

    walk(_parser(), [])
    assert "`--image`" in page and "`--partition`" in page and "`--placement`" in page  # compute add KIND


def test_compute_options_reference_and_guides_show_every_kind() -> None:
    from torchyard.compute.base import option_table

    module = hook()
    page = module.render_compute_options()
    kinds = module.builtin_kinds()
    assert {"local", "ray", "slurm", "kubernetes"} <= set(kinds)
    for kind in kinds:
        cls = module.target_class(kind)
        if cls.options:
            assert option_table(cls) in page, kind
    for kind in ("ray", "slurm", "kubernetes"):
        guide = (DOCS / "guides" / f"{kind}.md").read_text()
        assert f"<!-- torchyard:options {kind} -->" in guide, f"the {kind} guide shows its options table"
        assert option_table(module.target_class(kind)) in module.expand_markers(guide)


def test_env_contract_reference_names_every_variable() -> None:
    from torchyard.launch import contract

    page = hook().render_env_contract()
    for names in (contract.TORCH_NAMES, contract.PET_NAMES, contract.AZURE_NAMES, contract.TORCHYARD_NAMES,
                  contract.MLFLOW_NAMES, contract.MPI_NAMES):
        for name in names:
            assert f"`{name}`" in page, name
    assert "| `RANK` | `3` |" in page  # the example: node 1's second rank of a 2 × 2 job


def test_yaml_reference_has_every_field() -> None:
    import msgspec

    from torchyard.spec.yamljob import JobFile
    from torchyard.sweeps import expressions, policies, yamlsweep

    module = hook()
    page = module.render_yaml()
    for f in msgspec.structs.fields(JobFile):
        assert f"| `{f.encode_name}` |" in page, f.encode_name
    assert set(module.SWEEP_FIELDS) == yamlsweep._SWEEP_KEYS - {"type"}, "describe every sweep key in SWEEP_FIELDS"
    for name in [*expressions.ParameterExpression.FIELDS, *policies.POLICIES, *expressions.SAMPLERS]:
        assert f"`{name}`" in page, name


def test_http_reference_has_every_route() -> None:
    pytest.importorskip("starlette")
    from torchyard.server.app import openapi_document

    page = hook().render_http_api()
    for path, ops in openapi_document()["paths"].items():
        for method in ops:
            assert f"| {method.upper()} | `{path}` |" in page, (method, path)


def test_python_reference_renders_every_public_name() -> None:
    import torchyard

    page = hook().render_python_api()
    for name in torchyard.__all__:
        if name.startswith("__"):
            continue
        assert re.search(rf"^::: torchyard\.[\w.]+\.{name}$", page, re.M), name


def test_every_page_is_in_the_nav() -> None:
    """Every page outside guides/ is named in mkdocs.yml (a new guide joins the Guides section by itself;
    mkdocs --strict checks the rest too, but here it fails fast, naming the page)."""
    import yaml

    module = hook()
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    missing = [p for p in module.unlisted_pages(nav, DOCS) if not p.startswith("guides/")]
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"
    for generated in module.PAGES:
        assert generated in module._nav_paths(nav), generated


# --- the README, the front door ------------------------------------------------------------------


def test_the_readme_is_the_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    quick = blocks(ROOT / "README.md")[0].body
    assert 'pip install -e ".[examples]" && torchyard run --source-dir examples/digits --entry train.py ' in quick
    assert "\nbash scripts/test.sh" in quick
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
