"""The methods. Importing a module registers its model; this list is the only place models are enumerated."""

from . import dmd, emt_dlfr, lmf, mult, sft, tfn  # noqa: F401
