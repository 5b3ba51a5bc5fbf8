"""napari dock widgets: thin views over the core that share one Config per viewer."""
