"""The methods, one paper-style file each, and the blocks they share (layers, text encoder, base contract).

Importing a method's module registers it (affectfuse.config.registry); this list is the only place methods are
enumerated.
"""

from . import dmd, ef_lstm, emt_dlfr, lf_lstm, lmf, misa, mmim, mult, self_mm, sft, tfn, tfr_net  # noqa: F401
