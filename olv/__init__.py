"""OLV core: settings, database, safe XML parsing, normalization, the book-of-business file
format (``olv.bob``) and the command line.

The core imports no product package (``service``, ``bob_loader``, ``portal``, ...) except in
the composition root: the ``olv`` command (``olv.cli``, ``olv.__main__``), which also runs the
demo, and Alembic's ``olv/migrations/env.py``, which sees every package's tables.
"""

__version__ = "0.1.0"
