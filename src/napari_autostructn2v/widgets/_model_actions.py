"""The Train widget's actions on its trained model: save it (.pt), export it as a bioimage.io package (.zip)."""

from __future__ import annotations

from functools import partial

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..core.bioimageio import export_bioimageio
from ..core.images import InputError
from ..core.model import save_model
from ._common import current_index, layer_data, user_message


class ModelActions:
    """Save and export, mixed into the Train widget: they use its `model`, `model_path`, `package_path`,
    `export_button`, `images`, `_viewer` and `_show`, and keep the export's worker in `export_worker`."""

    def _model_target(self, path, suffix: str, action: str, field: str):
        """The file to write the trained model to (`suffix` added when missing), or None after telling the user
        why there is none: no trained model yet, or no file chosen in `field`."""
        if self.model is None:
            show_error("There is no trained model yet: train one first.")
            return None
        if not str(path) or path.is_dir():
            show_error(f"Choose a file to {action} (a {suffix} file) next to '{field}'.")
            return None
        return path if path.suffix else path.with_suffix(suffix)

    def save(self) -> None:
        """Write the trained model to the chosen file (one .pt file)."""
        path = self._model_target(self.model_path.value, ".pt", "save the model to", "model file")
        if path is None:
            return
        try:
            save_model(self.model, path)
        except OSError as error:
            show_error(f"Could not save the model to {path}: {error}")
            return
        show_info(f"Model saved to {path}")
        self._show(f"Model saved to {path}.")

    def export(self) -> None:
        """Write the trained model as a bioimage.io package (.zip) in a worker; the first chosen image is the
        package's example."""
        path = self._model_target(self.package_path.value, ".zip", "export the model to", "bioimage.io file")
        if path is None:
            return
        layers = list(self.images.value)
        try:
            example = layer_data(layers[0])[current_index(self._viewer, layers[0])] if layers else None
        except InputError as error:
            show_error(str(error))
            return
        # connected here, the error handler replaces superqt's, which would raise a user's error as well
        export = thread_worker(export_bioimageio, start_thread=False,
                               connect={"errored": partial(self._on_export_error, path)})
        self.export_worker = export(self.model, path, example)
        self.export_worker.returned.connect(lambda written: self._show(f"bioimage.io package saved to {written}."))
        self.export_worker.finished.connect(self._on_export_finished)
        self.export_button.enabled = False
        self._show(f"Exporting the bioimage.io package to {path} ...")
        self.export_worker.start()

    def _on_export_error(self, path, error: Exception) -> None:
        message = str(error) if isinstance(error, OSError) else user_message(error)
        if message is None:  # a bug, not the user's doing: napari reports the traceback
            raise error
        show_error(f"Could not export the model to {path}: {message}")
        self._show(f"Could not export the model to {path}: {message}", warn=True)

    def _on_export_finished(self) -> None:
        self.export_worker = None
        self.export_button.enabled = self.model is not None
