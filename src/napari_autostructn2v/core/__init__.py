"""The engine: numpy / scipy / scikit-image / torch only, no Qt or napari."""
