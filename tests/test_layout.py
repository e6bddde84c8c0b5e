"""The package's layout, read from its source with ``ast`` (imports inside functions count too):

1. no import cycles between modules;
2. stages import backwards only (:data:`STAGES`, lowest first): a module may import its own stage
   and the stages before it, never a later one;
3. no private name (``_name``) imported from another module, and a private module (``_name.py``)
   imported only from its own package;
4. no file over 500 lines, no function over 80 lines;
5. the helpers (the first stage) import no torch, so that commands that only read tables and write
   text (``clipshift report``, ``clipshift er``) start in a fraction of a second;
6. no recipe imports another recipe: ``clipshift.recipes.<recipe>`` imports only its own package,
   ``clipshift.recipes.common`` (what recipes share) and the stages below; ``common`` imports no recipe.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "clipshift"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
FILE_LINES, FUNCTION_LINES = 500, 80

# (stage, what it owns, its module prefixes), lowest first. The data flow of the project:
# world → data → models → train → evaluate → robustness → probe → report, with recipes and the CLI on top.
STAGES = [
    ("helpers", "torch-free helpers: atomic writes, report formatting, progress bars, command-line pairs, "
                "the main-script check for worker processes",
     ("clipshift", "clipshift.io", "clipshift.formatting", "clipshift.progress",
      "clipshift.options", "clipshift.spawning")),
    ("world", "the embedded captioned world", ("clipshift.world",)),
    ("data", "caption tables, shards, evaluation sets, ImageNet suites, text matching", ("clipshift.data",)),
    ("models", "towers, heads, checkpoints, loading open_clip / timm / own models", ("clipshift.models",)),
    ("train", "objectives, the training loop, process groups, several models at once",
     ("clipshift.train", "clipshift.distributed", "clipshift.parallel")),
    ("evaluate", "zero-shot heads, features, accuracy, real models with caches", ("clipshift.evaluate",)),
    ("robustness", "results tables, baseline fits, effective robustness, plots", ("clipshift.robustness",)),
    ("probe", "representation probes", ("clipshift.probe",)),
    ("report", "report.md → report.html", ("clipshift.report_html",)),
    ("recipes", "quickstart, study, fine-tuning, `clipshift train` and their reports", ("clipshift.recipes",)),
    ("cli", "the `clipshift` command",
     ("clipshift.cli", "clipshift.cli_probe", "clipshift.cli_aline", "clipshift.cli_er", "clipshift.cli_explore",
      "clipshift.cli_eval_many",
      "clipshift.__main__")),
]
HEAVY = ("torch", "torchvision", "open_clip", "timm", "safetensors")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    package: str  # the package the importing module is in (itself for an __init__.py)
    path: Path
    line: int
    target: str  # the clipshift module imported (a submodule when a name is one, else the module named)
    name: str | None  # the name imported from `target` (None: `import X` or a submodule)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, tuple[Path, str, ast.Module]]:
    """{module name: (path, text, tree)} of every source file of the package."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        out[module_name(path)] = (path, text, ast.parse(text, filename=str(path)))
    return out


@lru_cache(maxsize=None)
def imports() -> list[Import]:
    """Every import of a clipshift module, at module level or inside functions."""
    known, found = modules(), []
    for name, (path, _, tree) in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [Import(name, package, path, node.lineno, a.name, None)
                          for a in node.names if a.name in known]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                source = node.module if node.level == 0 else ".".join(p for p in (base, node.module) if p)
                if source not in known:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    found.append(Import(name, package, path, node.lineno, sub, None) if sub in known
                                 else Import(name, package, path, node.lineno, source, alias.name))
    return found


def stage_of(module: str) -> int | None:
    """Index in STAGES of the stage owning `module` (longest prefix; the package itself only exactly)."""
    best, length = None, -1
    for i, (_, _, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            matches = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if matches and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def where(imp: Import) -> str:
    return f"{imp.path.relative_to(SRC.parents[1]) if imp.path.is_absolute() else imp.path}:{imp.line}"


def later_stage_imports(found: list[Import]) -> list[str]:
    names = [s[0] for s in STAGES]
    wrong = []
    for imp in found:
        own, other = stage_of(imp.module), stage_of(imp.target)
        if own is not None and other is not None and other > own:
            wrong.append(f"{where(imp)}: {imp.module} (stage {names[own]}) imports {imp.target} "
                         f"(stage {names[other]}, later)")
    return wrong


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(found: list[Import]) -> list[str]:
    wrong = []
    for imp in found:
        if imp.name is not None and _private(imp.name) and imp.target != imp.module:
            wrong.append(f"{where(imp)}: {imp.module} imports the private name {imp.name} from {imp.target}")
        parts = imp.target.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            if _private(part) and imp.package != owner:
                wrong.append(f"{where(imp)}: {imp.module} imports the private module {'.'.join(parts[:i + 1])} "
                             f"of package {owner} from outside it")
    return wrong


RECIPES, SHARED = "clipshift.recipes", "common"


def recipe_of(module: str) -> str | None:
    """The recipe package a module belongs to (``quickstart``, ``study``, ``common``, ...), else None."""
    if not module.startswith(RECIPES + "."):
        return None
    return module[len(RECIPES) + 1:].split(".")[0]


def cross_recipe_imports(found: list[Import]) -> list[str]:
    wrong = []
    for imp in found:
        own, other = recipe_of(imp.module), recipe_of(imp.target)
        if own is not None and other is not None and other != own and other != SHARED:
            wrong.append(f"{where(imp)}: {imp.module} (recipe {own}) imports {imp.target} (recipe {other}); "
                         f"move what both need into {RECIPES}.{SHARED}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


# --- the rules ---------------------------------------------------------------------------------------------------

def test_every_module_has_a_stage():
    missing = [m for m in modules() if stage_of(m) is None]
    assert not missing, f"modules in no stage of STAGES (add them where they belong): {missing}"


def test_no_import_cycles():
    graph = {m: set() for m in modules()}
    for imp in imports():
        if imp.target != imp.module:
            graph[imp.module].add(imp.target)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_stages_import_backwards_only():
    wrong = later_stage_imports(imports())
    assert not wrong, "imports of a later stage:\n" + "\n".join(wrong)


def test_no_private_names_or_modules_across_modules():
    wrong = private_imports(imports())
    assert not wrong, "private names across modules:\n" + "\n".join(wrong)


def test_no_long_files_or_functions():
    wrong = []
    for path, text, tree in modules().values():
        lines = len(text.splitlines())
        if lines > FILE_LINES:
            wrong.append(f"{path.relative_to(SRC.parents[1])}: {lines} lines (limit {FILE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    wrong.append(f"{path.relative_to(SRC.parents[1])}:{node.lineno} {node.name}: {length} lines "
                                 f"(limit {FUNCTION_LINES})")
    assert not wrong, "too long:\n" + "\n".join(wrong)


def test_no_recipe_imports_another():
    recipes = {recipe_of(m) for m in modules()} - {None}
    assert {"quickstart", "study", "finetune", SHARED} <= recipes, recipes
    wrong = cross_recipe_imports(imports())
    assert not wrong, "recipes importing each other:\n" + "\n".join(wrong)


def test_helpers_import_no_torch():
    wrong = []
    for name, (path, _, tree) in modules().items():
        if stage_of(name) != 0:
            continue
        for node in ast.walk(tree):
            roots = ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else
                     [node.module.split(".")[0]] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            wrong += [f"{path.relative_to(SRC.parents[1])}:{node.lineno} imports {r}" for r in roots if r in HEAVY]
    assert not wrong, "helpers must stay torch-free:\n" + "\n".join(wrong)


# --- the checker itself --------------------------------------------------------------------------------------------

def test_the_checks_find_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert stage_of("clipshift") == 0 and stage_of("clipshift.io") == 0
    assert STAGES[stage_of("clipshift.probe.cli")][0] == "probe"
    assert STAGES[stage_of("clipshift.cli")][0] == "cli"
    assert STAGES[stage_of("clipshift.distributed")][0] == "train"
    assert stage_of("clipshift.unknown") is None
    assert _private("_pp") and not _private("__version__") and not _private("pp")
    here = Path("src/clipshift/probe/cli.py")
    up = Import("clipshift.probe.cli", "clipshift.probe", here, 142, "clipshift.cli", "open_suites")
    assert later_stage_imports([up]) == ["src/clipshift/probe/cli.py:142: clipshift.probe.cli (stage probe) "
                                         "imports clipshift.cli (stage cli, later)"]
    down = Import("clipshift.probe.cli", "clipshift.probe", here, 3, "clipshift.data.imagenet", "open_suites")
    assert later_stage_imports([down]) == []
    name = Import("clipshift.probe.cli", "clipshift.probe", here, 4, "clipshift.recipes.report", "_pp")
    own_module = Import("clipshift.probe.cka", "clipshift.probe", here, 5, "clipshift.probe._threads", "threads_for")
    other_module = Import("clipshift.data.csv_source", "clipshift.data", here, 6, "clipshift._progress", "progress_bar")
    package_face = Import("clipshift.data", "clipshift.data", here, 7, "clipshift.data._images", "ImageDecodeError")
    assert private_imports([name, own_module, other_module, package_face]) == [
        "src/clipshift/probe/cli.py:4: clipshift.probe.cli imports the private name _pp from clipshift.recipes.report",
        "src/clipshift/probe/cli.py:6: clipshift.data.csv_source imports the private module clipshift._progress of "
        "package clipshift from outside it"]
    across = Import("clipshift.recipes.study.data", "clipshift.recipes.study", here, 8,
                    "clipshift.recipes.quickstart.run", "predictor")
    shared = Import("clipshift.recipes.study.data", "clipshift.recipes.study", here, 9,
                    "clipshift.recipes.common.world", "predictor")
    upward = Import("clipshift.recipes.common.world", "clipshift.recipes.common", here, 10,
                    "clipshift.recipes.study.config", "StudyConfig")
    assert [w.split(": ", 1)[1].split(" (")[0] for w in cross_recipe_imports([across, shared, upward])] == [
        "clipshift.recipes.study.data", "clipshift.recipes.common.world"]
    assert recipe_of("clipshift.recipes") is None and recipe_of("clipshift.recipes.finetune.eval") == "finetune"
    found = {(i.module, i.target, i.name) for i in imports()}
    assert ("clipshift.train.loop", "clipshift.io", "atomic_write_text") in found  # relative, module level
    assert ("clipshift.cli", "clipshift.report_html", "write_html_report") in found  # inside a function
    assert ("clipshift.probe.cka", "clipshift.probe._threads", "threads_for") in found
    assert ("clipshift.models.factory", "clipshift.models.convnet", None) in found  # `from . import convnet`
