"""The freeze of Python's older objects while a widget's run goes on (`widgets._quiet_gc`)."""

import gc

import pytest
from qtpy.QtCore import QEvent, QObject, Signal

from napari_autostructn2v.widgets import _quiet_gc
from napari_autostructn2v.widgets._quiet_gc import quiet_gc_while


class FakeWorker(QObject):
    finished = Signal()


@pytest.fixture(autouse=True)
def unfrozen():
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()
    _quiet_gc._runs = 0


def test_objects_made_before_a_run_are_frozen_until_the_last_run_ends(qapp):
    first, second, context = FakeWorker(), FakeWorker(), QObject()
    quiet_gc_while(first, context)
    assert gc.get_freeze_count() > 0  # a full collection now walks only what the runs create
    quiet_gc_while(second, context)
    first.finished.emit()
    first.finished.emit()  # a run is released once
    assert gc.get_freeze_count() > 0  # the second run goes on
    second.finished.emit()
    assert gc.get_freeze_count() == 0


def test_a_run_whose_widget_is_deleted_before_it_starts_gives_the_objects_back(qapp):
    worker, context = FakeWorker(), QObject()
    quiet_gc_while(worker, context)
    context.deleteLater()
    qapp.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    assert gc.get_freeze_count() == 0


def test_someone_elses_freeze_is_left_alone(qapp):
    gc.freeze()
    worker = FakeWorker()
    quiet_gc_while(worker, QObject())
    worker.finished.emit()
    assert gc.get_freeze_count() > 0
