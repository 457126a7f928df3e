"""Shared base of qsign: the command dispatcher, configuration, errors and translations.

Every other qsign package may import from here; this package imports none of them,
except ``qsign.cli``, which registers their subcommands.
"""

__version__ = "0.1.0"
