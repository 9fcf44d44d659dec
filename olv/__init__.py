"""OLV core: settings, database, safe XML parsing, normalization and the command line.

The core imports no product package (``service``, ``bob_loader``, ``portal``); the CLI is the
only place that wires them together.
"""

__version__ = "0.1.0"
