"""Pipeline plugins shipped with edge-runtime, registered through the ``edge_runtime.pipelines``
entry-point group: ``windows`` (windowed statistics) and ``threshold`` (an example for plugin
authors)."""
