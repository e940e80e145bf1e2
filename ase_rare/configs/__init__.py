"""Configuration files shipped with the package (``ase-rare demo`` runs
``lj7_600K.toml``)."""
