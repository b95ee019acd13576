"""Data layer: dataset facts (``specs``), motion representation, loaders, SynthML, configs."""
