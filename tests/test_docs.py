"""The README and docs/*.md name only things that exist, and the README stays a short front door.

What is extracted from each page (README.md, docs/*.md), and how it is checked:

* links `[text](target)`: every target that is not a URL or a pure `#anchor` exists, relative to
  the page that holds it (the `#anchor` part is dropped);
* paths: in inline code and fenced code blocks, every whitespace-separated token that contains a
  `/` (quotes, parentheses and trailing punctuation stripped; `PATH@RECIPE` loses its `@RECIPE`)
  and whose first segment is a top-level entry tracked by git (`models/`, `docs/`, `tests/`, ...)
  exists relative to the repo root (`*` globs and one `{a,b}` brace level are expanded). Tokens
  whose first segment is anything else (`album/`, `d1/a.jpg`, `DIR/...`, URLs) are examples, not
  repo paths, and are not checked;
* outputs: paths in the folders that commands write (OUTPUTS below) must match what
  those commands write there, so an old file name is still caught;
* `../shared/...` (beside the checkout) is checked only where that folder exists;
* modules: every `dbd.a.b` name is a module (importlib.util.find_spec), or a module followed by
  attributes of it, or an entry-point group of pyproject's [project.entry-points] (`dbd.formats`);
  after `python -m`/`-m` it must be runnable (a package needs a `__main__`);
* commands: every `dbd-NAME` is a script of pyproject's [project.scripts];
* make targets: `make TARGET` at the start of an inline code span or of a code-block line (prose
  such as "make it work" is not a command) is a Makefile target.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
README_MAX_BYTES = 10_000
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Folders that commands write (git-ignored, or absent from a checkout), each with the names the docs
# may give inside it: a path there is an output of a command (runs/: dbd-train and the recipe, in
# folders the user names; exports/: dbd-export's MODEL_SIZE_PRECISION files and its report;
# reports/: dbd-bench and its --profile; predictions/: dbd-predict's default --out).
OUTPUTS = {
    "runs": r"runs/.*",
    "exports": r"exports/((dbd_student|dbd_teacher)_\d+_(fp32|fp16|int8)\.(onnx|tflite|mlpackage)|export_report\.json)?",
    "reports": r"reports/bench/((bench\.(md|json)|profile\.(md|json)|curves\.png|latency_accuracy\.png))?",
    "predictions": r"predictions/",
}

CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE = re.compile(r"(?<![\w.-])(-m\s+)?(dbd(?:\.[A-Za-z_]\w*)+)")
COMMAND = re.compile(r"(?<![\w.-])(dbd-[a-z]+)")
MAKE = re.compile(r"^make ([a-z][\w-]*)", re.M)  # applied to code texts, one per line


def code_texts(text: str) -> list[str]:
    """Inline code spans and fenced code blocks of a Markdown page."""
    blocks = FENCE.findall(text)
    return blocks + CODE_SPAN.findall(FENCE.sub("", text))


def expand(pattern: str) -> list[str]:
    """One level of shell braces: `a/{b,c}.x` -> `a/b.x`, `a/c.x`."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    return [pattern[: m.start()] + part + pattern[m.end() :] for part in m.group(1).split(",")] if m else [pattern]


def make_names(text: str) -> set[str]:
    """`make TARGET` at the start of an inline code span or of a code-block line (not prose)."""
    return set(MAKE.findall("\n".join(code_texts(text))))


def tracked_top_level() -> set[str]:
    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # no git: whatever is in the checkout
        return {p.name for p in REPO.iterdir() if not p.name.startswith(".") and p.name not in OUTPUTS}
    return {line.split("/")[0] for line in files.splitlines() if line}


def path_tokens(text: str) -> set[str]:
    tokens = set()
    for code in code_texts(text):
        for token in code.split():
            token = token.strip("'\"()[],;:").split("@")[0].rstrip(".")
            if "/" in token and "://" not in token and not token.startswith(("/", "~", "…")):
                tokens.add(token)
    return tokens


def exists(base: Path, path: str) -> bool:
    """Every brace alternative exists (a `*` pattern: at least one match)."""
    return all(any(base.glob(p)) if "*" in p else (base / p).exists() for p in expand(path))


def missing_paths(page: Path, text: str, tracked: set[str]) -> list[str]:
    bad = []
    for target in LINK.findall(text):
        target = target.split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        resolved = (page.parent / target).resolve()
        if resolved.is_relative_to(SHARED.resolve()):
            if SHARED.is_dir() and not resolved.exists():
                bad.append(f"link {target}")
        elif not resolved.is_relative_to(REPO) or not resolved.exists():
            bad.append(f"link {target}")
    for token in path_tokens(text):
        first = token.split("/")[0]
        if token.startswith("../shared/"):
            if SHARED.is_dir() and not exists(REPO, token):
                bad.append(token)
        elif first in OUTPUTS:
            if not all(re.fullmatch(OUTPUTS[first], p) for p in expand(token)):
                bad.append(f"{token} (not an output the commands write)")
        elif first in tracked and not exists(REPO, token):
            bad.append(token)
    return bad


def module_problem(name: str, runnable: bool) -> str | None:
    if not runnable and name in pyproject()["project"].get("entry-points", {}):
        return None
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        module = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        if i < len(parts):  # module.attribute...
            if runnable:
                return f"{name}: {module} is the module, the rest is not runnable"
            obj = importlib.import_module(module)
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return f"{name}: {module} has no {'.'.join(parts[i:])}"
                obj = getattr(obj, attr)
            return None
        if (
            runnable
            and spec.submodule_search_locations is not None
            and importlib.util.find_spec(f"{module}.__main__") is None
        ):
            return f"python -m {name}: a package without __main__"
        return None
    return f"{name}: no such module"


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def scripts() -> set[str]:
    return set(pyproject()["project"]["scripts"])


def make_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([^\s#=:$][^=:]*?)\s*:(?!=)", line)
        if m:
            targets.update(m.group(1).split())
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
    return targets


@pytest.fixture(scope="module")
def tracked() -> set[str]:
    return tracked_top_level()


def test_readme_is_a_short_front_door():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details to docs/ (limit {README_MAX_BYTES})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(page, tracked):
    assert missing_paths(page, page.read_text(), tracked) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_exist(page):
    text = page.read_text()
    problems = {module_problem(name, bool(dash_m)) for dash_m, name in MODULE.findall(text)}
    assert problems - {None} == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_commands_exist(page):
    assert set(COMMAND.findall(page.read_text())) - scripts() == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_make_targets_exist(page):
    assert make_names(page.read_text()) - make_targets() == set()


def test_the_checks_catch_what_they_are_for(tracked):
    """Each rule fails on a wrong name (so a passing run means something)."""
    page = REPO / "docs" / "example.md"
    bad = (
        "`models/wieghts/dbd_student.safetensors`, `exports/dbd_student_int8.tflite`, "
        "[gone](nothing.md), `tests/test_{docs,nothing}.py`"
    )
    assert len(missing_paths(page, bad, tracked)) == 4
    good = "`models/weights/dbd_student.safetensors`, [up](../README.md), `album/a.jpg`, `runs/x/last.safetensors`"
    assert missing_paths(page, good, tracked) == []
    assert module_problem("dbd.runtime.nothing", False) and module_problem("dbd.models", True) is None
    assert module_problem("dbd.runtime.metadata.read_metadata", False) is None
    assert module_problem("dbd.runtime.metadata.no_such_function", False)
    assert module_problem("dbd.runtime", True)  # a package without __main__
    assert "dbd-nothing" not in scripts() and {"dbd-train", "dbd-export", "dbd-bench", "dbd-predict"} <= scripts()
    assert {"demo", "test", "test-fast", "gate"} <= make_targets() and "nothing" not in make_targets()
    assert make_names("`make demo` and, in prose, make it work\n```bash\nmake test   # x\n```") == {"demo", "test"}
