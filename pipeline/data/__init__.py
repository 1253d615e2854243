"""Data: loaders and transform chains, synthetic phantoms (:mod:`pipeline.data.phantoms`).

Transitional on branch ``chest``: this package shadows the module file ``pipeline/data.py``, which
the layout move turns into ``pipeline/data/loaders.py``. Until that merge, re-export that file's
names here so ``pipeline.data.make_loader`` etc. keep working. At the merge this file is replaced by
the moved package's own ``__init__.py`` (delete the block below).
"""

import importlib.util as _importlib_util
from pathlib import Path as _Path

_spec = _importlib_util.spec_from_file_location("pipeline._data_module", _Path(__file__).parent.parent / "data.py")
if _spec is not None and _spec.loader is not None and _Path(_spec.origin or "").exists():
    _module = _importlib_util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
