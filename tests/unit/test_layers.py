"""The import structure docs/architecture.md describes: no import cycles between modules
(runtime imports; `if TYPE_CHECKING:` ones are types only). The layer order itself is the
import-linter contract in pyproject.toml, run by scripts/test.sh."""

from __future__ import annotations

import grimp


def test_no_module_import_cycles() -> None:
    graph = grimp.build_graph("vmkit", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(f"{module} -> {' -> '.join(chain or [])}")
    assert cycles == []
