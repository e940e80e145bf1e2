"""SchNetPack, imported once without the warning it raises at import.

SchNetPack decorates a helper with ``torch.jit.script``, which torch
deprecates with a ``FutureWarning`` on every fresh import — in each worker
process too. It is SchNetPack's to fix and says nothing about the user's run,
so this one warning, at this one import, is not shown.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
    )
    import schnetpack  # noqa: F401
