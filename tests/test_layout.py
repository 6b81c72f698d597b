"""The project's shape: no module imports from a layer above its own, and every shared fact has one definition.

Layers, lowest first: `common` (torch-free facts and checks) and `results_store` (pyarrow only); then models,
data, pruning and the descriptions; then training; then the trial; then the orchestrator. `analysis` reads the
store only. Imports inside functions count too.
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("common", "results_store", "trainables", "orchestrator", "analysis")

# (module prefix, layer): the longest matching prefix wins.
LAYERS = [
    ("common", 0),
    ("results_store", 0),
    ("common.registry", 1),
    ("trainables.specs", 1),
    ("trainables.models", 1),
    ("trainables.data", 1),
    ("trainables.pruning", 1),
    ("trainables.memory", 1),
    ("trainables.checkpoints", 1),
    ("trainables.training", 2),
    ("trainables", 3),  # the trial: trial.py, imp.py, record.py, the prune-one command
    ("orchestrator", 4),
]
ANALYSIS_MAY_IMPORT = ("common", "results_store", "analysis")


def layer_of(module: str) -> int:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def project_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def imports_of(path: pathlib.Path, module: str):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module


def test_no_module_imports_from_a_layer_above_its_own():
    wrong = []
    for module, path in project_modules():
        for imported in imports_of(path, module):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if module.startswith("analysis"):
                if imported.split(".")[0] not in ANALYSIS_MAY_IMPORT:
                    wrong.append(f"{module} imports {imported} (analysis reads the store only)")
            elif imported.startswith("analysis") or layer_of(imported) > layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {imported}")
    assert wrong == []


# Definitions that must exist exactly once in the project (a second one would drift from the first).
ONE_DEFINITION = {
    "the integer-at-least check": r"def \w*integer_at_least\w*\(|def _check_int\w*\(",
    "the range check": r"def check_number\(",
    "the choice check": r"def \w*check_choice\(|def _choice\(",
    "the schedule choices": r"^SCHEDULES\s*=",
    "the scope choices": r"^SCOPES\s*=",
    "the scoring-mode choices": r"^PRUNE_MODES\s*=",
    "the conv/linear layer kinds": r"^WEIGHT_KINDS\s*=",
    "the default iterations": r"^DEFAULT_ITERATIONS\b[^=\n]*=|DEFAULT_SYNFLOW_ITERATIONS\s*=",
    "the default pruning settings": r"^DEFAULT_PRUNE_SETTINGS\b[^=\n]*=",
    "the paper's recipes": r"^PAPER_RECIPES\s*=",
    "the fallback recipe": r"^FALLBACK_RECIPE\s*=",
    "the GPU share per dataset": r"^GPU_SHARE_BY_DATASET\s*=",
    "the prune-pass count": r"def scoring_passes\(",
    "the one-line argument parser": r"class \w*Parser\(argparse\.ArgumentParser\)",
    "the one-line error": r"def one_line\(",
}


@pytest.mark.parametrize("fact", sorted(ONE_DEFINITION))
def test_each_shared_fact_is_defined_once(fact):
    pattern = re.compile(ONE_DEFINITION[fact], re.MULTILINE)
    places = [f"{path.relative_to(ROOT)}:{source[:m.start()].count(chr(10)) + 1}"
              for _, path in project_modules() for source in [path.read_text()] for m in pattern.finditer(source)]
    assert len(places) == 1, f"{fact}: {places}"


def test_the_project_version_is_defined_only_in_pyproject():
    places = [str(path.relative_to(ROOT)) for _, path in project_modules()
              if re.search(r"""^(__version__|PROJECT_VERSION)\s*=|["']0\.1\.0["']""", path.read_text(), re.M)]
    assert places == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_is_over_about_400_lines_unless_its_docstring_says_why(package):
    long = []
    for module, path in project_modules():
        if not module.startswith(package):
            continue
        lines = path.read_text().count("\n")
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > 420 and "lines" not in docstring:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert long == []
