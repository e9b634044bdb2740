"""The model registry on disk: its directory layout (``layout``), the versions' states
(``store``), and the polling ``watcher`` that feeds the store the models ``changes`` finds
may have changed since the last scan."""
