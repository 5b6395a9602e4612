"""Bringing a real export into the log contract through a mapping file (docs/import.md).

Modules: `mapping` (the mapping file's vocabulary, read strictly), `values` (text to the
contract's types, exactly), `tables` (the contract's tables from the export's rows),
`importer` (`import_export`: convert, check, write atomically).
"""

from features.imports.importer import check_import_dir, convert, import_export
from features.imports.mapping import Mapping, MappingError, load_mapping
from features.imports.values import SourceError

__all__ = [
    "Mapping",
    "MappingError",
    "SourceError",
    "check_import_dir",
    "convert",
    "import_export",
    "load_mapping",
]
