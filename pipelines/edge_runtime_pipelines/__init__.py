"""Pipeline plugins shipped with edge-runtime, registered through the ``edge_runtime.pipelines``
entry-point group: ``windows`` (windowed statistics), ``camera`` (batched ONNX detection across
cameras, counts, zones, line crossings) and ``threshold`` (an example for plugin authors)."""
