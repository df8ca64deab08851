"""The main window: image list, canvas, unary picker, refiner panel, legend, editing tools, status bar, shortcuts.

It owns the :class:`~app.workers.RefineScheduler` and turns document and panel events into requests: a slider drag
schedules a reduced-resolution preview (debounced), its release and the Refine action run in full at once, a method
or unary change runs in full, and so does the end of a brush stroke, an undo or a redo (debounced). Results of an
earlier image are never applied to the current one. :class:`~app.autosave.ProjectSync` saves edits into the
folder's project and restores them when the folder is opened again.

At start-up (``load_engine_later=True``) the window is painted before torch is imported: the folder's list, its first
image alone and the tools, with "Loading the compute engine" in the Unary and Refiner boxes. That first paint starts
:class:`~app.engine.EngineLoader`; once it is ready the unary picker and the refiner panel take the boxes' places,
the image shown opens with its unary and is refined, and what was asked for meanwhile
(:meth:`MainWindow.when_engine_ready`) runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QSignalBlocker, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QColor, QKeySequence, QPaintEvent
from PySide6.QtWidgets import (QDockWidget, QFrame, QGroupBox, QHBoxLayout, QLabel, QListWidget, QMainWindow,
                               QMessageBox, QProgressBar, QPushButton, QScrollArea, QSlider, QVBoxLayout, QWidget)

from . import engine
from .dialogs import help as help_dialogs
from .dialogs.help import ShortcutsDialog
from .engine import EngineLoader
from .folder import ImageFolder, scan_folder
from .keys import ShortcutKeys
from .scribbles import ScribbleLayer
from .tools import ToolState
from .widgets import files
from .widgets.canvas import DEFAULT_OPACITY, Canvas
from .widgets.legend import Legend
from .widgets.tools import BrushControls, tool_actions

if TYPE_CHECKING:  # the compute engine (torch) is imported after the first paint (app.engine); the dialogs when
    # first opened: neither is on the first screen
    from .autosave import ProjectSync
    from .compute import RefineResult
    from .dialogs.export import ExportDialog
    from .dialogs.network import NetworkDialog
    from .dialogs.tune import TuneDialog
    from .document import ImageDocument
    from .network import Network
    from .network_jobs import NetworkJobs
    from .preset_policy import PresetChange, PresetPolicy
    from .widgets.refiner_panel import RefinerPanel
    from .widgets.unary_picker import UnaryPicker
    from .workers import RefineScheduler

__all__ = ["MainWindow", "format_timing"]

SHORTCUTS = {
    "open": ["Ctrl+O"], "next": ["PgDown", "N"], "previous": ["PgUp", "P"], "refine": ["R", "Ctrl+Return"],
    "cancel": ["Esc"], "overlay": ["O"], "boundary": ["E"], "before": ["B"], "background": ["G"], "fit": ["F"],
    "undo": ["Ctrl+Z"], "redo": ["Ctrl+Shift+Z", "Ctrl+Y"], "accept": ["A"], "export": ["Ctrl+E"],
    "tune": ["Ctrl+T"], "quit": ["Ctrl+Q"], "shortcuts": ["F1"], "about": [], "network": ["Ctrl+Shift+N"],
}  # and app.widgets.tools.TOOL_SHORTCUTS: V navigate, D brush, X eraser, [ and ] brush size
DESCRIPTIONS = {
    "open": "Open a folder of images with masks or probability maps", "previous": "Previous image",
    "next": "Next image", "refine": "Run the refiner at full resolution", "cancel": "Stop the running refinement",
    "overlay": "Show or hide the label overlay", "boundary": "Draw only the outlines of the labels",
    "fit": "Zoom to the whole image", "undo": "Undo the last stroke", "redo": "Redo the undone stroke",
    "export": "Write the saved masks as VOC, index, COCO, YOLO or binary files",
    "tune": "Learn the refiner's parameters from images with ground truth", "quit": "Quit CRF Studio",
    "shortcuts": "This sheet", "about": "Versions and device",
}  # the Help ▸ Keyboard shortcuts sheet shows them; app.widgets.tools has the tools'
LEGEND_ROWS = 4  # class rows in view at most; more scroll, so the sliders keep their room at 1280×800


ENGINE_FALLBACK_MS = 500  # a window shown but not painted by then starts loading the engine anyway
LOADING = "Loading the compute engine (PyTorch)…"


def _loading_label() -> QLabel:
    """The placeholder of a box whose contents need the compute engine."""
    label = QLabel(LOADING)
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setStyleSheet("color: #5f6368;")
    return label


def format_timing(result: RefineResult) -> str:
    """``"convcrf · build 140 ms · iterations 65 ms · total 250 ms"`` (+ cached / preview notes)."""
    t = result.timing
    build = "build cached" if t.get("cached") else f"build {t['build_ms']:.0f} ms"
    preview = f" · preview at 1/{t['preview_scale']} size" if t.get("preview_scale", 1) > 1 else ""
    return (f"{result.method} · {build} · iterations {t['iterations_ms']:.0f} ms · total {t['total_ms']:.0f} ms"
            f"{preview}")


class MainWindow(QMainWindow):
    """CRF Studio's window. ``open_folder(path)`` loads a folder; the actions are in :attr:`qactions` by name."""

    def __init__(self, *, scheduler: RefineScheduler | None = None, device: str | None = None,
                 load_engine_later: bool = False) -> None:
        """``load_engine_later=True`` (the app's start-up) shows the window before torch is imported: the first
        paint starts :class:`~app.engine.EngineLoader`, and until it is ready the folder's images are shown without
        their unaries and what needs the engine waits (:meth:`when_engine_ready`). Otherwise the engine is imported
        here (at once when it is already loaded, as in tests)."""
        super().__init__()
        self.setWindowTitle("CRF Studio")
        self.folder: ImageFolder | None = None
        self.index = -1
        self.document: ImageDocument | None = None
        self.bad_images: dict[int, str] = {}  # images of the folder that cannot be opened: index -> why
        self._carried: dict = {}  # refiner, parameters and mask settings handed to the next image opened
        self._histories: dict[Path, ScribbleLayer] = {}  # undo histories of the folder's images left this session
        self.error_box: QMessageBox | None = None  # the last error shown, kept open until the user closes it
        self.export_dialog: ExportDialog | None = None
        self.tune_dialog: TuneDialog | None = None
        self.network_dialog: NetworkDialog | None = None
        self.tools = ToolState(self)
        self.canvas = Canvas(tools=self.tools)
        self.setCentralWidget(self.canvas)
        self.image_list = QListWidget()
        self.legend = Legend()
        self._device = device
        self._engine_waiting: list[Callable[[], object]] = []  # run once the engine is attached
        self._engine_error = ""
        self._closed = False  # closeEvent ran
        self._preview_index = -1  # the image shown while the engine loads (no document yet)
        self.engine_seconds: float | None = None  # how long the engine's import took on its thread (None: not here)
        self.engine_attach_seconds = 0.0  # how long _attach_engine took on the GUI thread
        # made by _attach_engine, once torch is imported
        self.scheduler: RefineScheduler | None = scheduler
        self._first_request = 1  # requests with smaller ids were made for a previous document
        self.presets: PresetPolicy | None = None  # which shipped preset kind the parameters come from
        self.network_jobs: NetworkJobs | None = None
        self.project_sync: ProjectSync | None = None
        self.unary_picker: UnaryPicker | None = None
        self.panel: RefinerPanel | None = None
        self._build_docks()
        self.qactions = self._build_actions()
        self.qactions.update(tool_actions(self.tools, self))
        self.shortcuts_dialog: ShortcutsDialog | None = None
        self.about_box: QMessageBox | None = None
        self._build_menus()
        self._build_toolbar()
        self._build_edit_toolbar()
        self._build_status_bar()
        self.image_list.currentRowChanged.connect(self.open_index)
        self.canvas.overlay_updated.connect(lambda: self.legend.set_labels(self.canvas.shown_labels()))
        self.canvas.error.connect(lambda message: self.show_status(message, error=True))
        self.legend.class_clicked.connect(self.pick_class)
        self.tools.label_changed.connect(self.legend.set_selected)
        self.legend.set_selected(self.tools.label)
        self.keys = ShortcutKeys(self.focus_canvas, self)
        self.keys.watch(self)
        self.resize(1280, 800)
        self.engine_loader = EngineLoader(self)
        self.engine_loader.ready.connect(self._on_engine_ready, Qt.ConnectionType.QueuedConnection)
        self.engine_loader.failed.connect(self._on_engine_failed, Qt.ConnectionType.QueuedConnection)
        if not load_engine_later:
            engine.load()
            self._attach_engine()

    # --- the compute engine ----------------------------------------------------------------------------------------
    @property
    def engine_ready(self) -> bool:
        """True once the compute engine is attached: documents, refinement, the refiner panel."""
        return self.panel is not None

    @property
    def engine_error(self) -> str:
        """Why the compute engine could not be loaded; "" while it loads or once it is ready."""
        return self._engine_error

    def when_engine_ready(self, action: Callable[[], object]) -> None:
        """Run ``action`` now if the engine is ready, else as soon as it is (in the order given)."""
        if self.engine_ready:
            action()
        else:
            self._engine_waiting.append(action)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        super().paintEvent(event)
        if not self.engine_ready and not self.engine_loader.started:
            QTimer.singleShot(0, self.engine_loader.start)  # after this first frame has reached the screen

    def showEvent(self, event: object) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if not self.engine_ready:  # a window that is never painted (minimised) still gets its engine
            QTimer.singleShot(ENGINE_FALLBACK_MS, self.engine_loader.start)

    def _on_engine_ready(self, seconds: float) -> None:
        self.engine_seconds = seconds
        if not self._closed:  # a window closed while the engine loaded starts no refinement
            self._attach_engine()

    def _on_engine_failed(self, message: str) -> None:
        self._engine_error = message
        self._engine_waiting.clear()
        for box in (self.unary_box, self.refiner_box):
            box.layout().itemAt(0).widget().setText("The compute engine could not be loaded; see the message.")
        self.show_error("Compute engine", message)

    def _attach_engine(self) -> None:
        """Build what needs the engine (scheduler, network runner, autosave, presets, unary picker, refiner panel),
        open the folder shown (with its unaries) and run what waited for it."""
        from .autosave import ProjectSync
        from .document import available_methods
        from .network_jobs import NetworkJobs
        from .preset_policy import PresetPolicy
        from .widgets.refiner_panel import RefinerPanel
        from .widgets.unary_picker import UnaryPicker
        from .workers import RefineScheduler

        import crfcore

        began = time.perf_counter()
        self.scheduler = self.scheduler or RefineScheduler(self, device=self._device)
        self.presets = PresetPolicy()
        self.network_jobs = NetworkJobs(self, device=self._device)
        self.project_sync = ProjectSync(self)
        self.unary_picker = UnaryPicker()
        self.panel = RefinerPanel(available_methods())
        for box, widget in ((self.unary_box, self.unary_picker), (self.refiner_box, self.panel)):
            waiting = box.layout().itemAt(0).widget()
            box.layout().replaceWidget(waiting, widget)
            waiting.deleteLater()
        self.device_label.setText(f"device: {self._device or crfcore.best_device()}")
        self.network_cancel.clicked.connect(self.network_jobs.cancel)
        self.panel.param_edited.connect(lambda dragging: self.schedule_refine(preview=dragging))
        self.panel.param_released.connect(self.refine_now)
        self.panel.error.connect(lambda message: self.show_error("Refiner", message))
        self.panel.preset_kind_chosen.connect(self.choose_preset_kind)
        self.unary_picker.error.connect(lambda message: self.show_error("Unary source", message))
        self.project_sync.saved.connect(lambda rid, note: self.save_label.setText(f"saved r{rid} ({note})"))
        self.project_sync.error.connect(lambda message: self.show_error("Autosave", message))
        self.scheduler.started.connect(self._on_started)
        self.scheduler.progress.connect(self._on_progress)
        self.scheduler.finished.connect(self._on_finished)
        self.scheduler.failed.connect(self._on_failed)
        self.scheduler.cancelled.connect(self._on_cancelled)
        self.scheduler.refining_changed.connect(self._on_busy)  # not a warm-up: Cancel (Esc) stays free
        self.network_jobs.ready.connect(self._on_network_ready)
        self.network_jobs.progress.connect(self._on_network_progress)
        self.network_jobs.busy_changed.connect(self._on_network_busy)
        self.network_jobs.failed.connect(lambda message: self.show_error("Network", message))
        self.keys.watch(self)  # the new number boxes hand focus back too
        if self.folder is not None:  # shown without unaries while the engine loaded: open it for real
            index = self._preview_index
            if self.open_folder(self.folder.root) and index > 0 and index != self.index:
                self.open_index(index)
        self.engine_attach_seconds = time.perf_counter() - began
        waiting, self._engine_waiting = self._engine_waiting, []
        for action in waiting:
            action()

    # --- layout ------------------------------------------------------------------------------------------------
    def _build_docks(self) -> None:
        images = QDockWidget("Images")
        images.setObjectName("images")
        images.setWidget(self.image_list)
        self.image_list.setMinimumWidth(120)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, images)
        self.refine_button = QPushButton("Refine")
        self.refine_button.setToolTip("Run the refiner at full resolution (R, Ctrl+Return).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running refinement; the previous mask stays (Esc).")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.refine_button.clicked.connect(self.refine_now)
        self.cancel_button.clicked.connect(self.cancel_refine)
        run_row = QHBoxLayout()
        run_row.addWidget(self.refine_button, 1)
        run_row.addWidget(self.cancel_button)
        side = QWidget()
        column = QVBoxLayout(side)
        self.legend_scroll = QScrollArea()  # many classes scroll here rather than squeeze the sliders
        self.legend_scroll.setWidget(self.legend)
        self.legend_scroll.setWidgetResizable(True)
        self.legend_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.legend_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.legend_scroll.setMaximumHeight(LEGEND_ROWS * self._legend_row_height())
        self.network_button = QPushButton("Network…")
        self.network_button.setToolTip("Run a segmentation network on the folder's images and refine its "
                                       "probabilities (Ctrl+Shift+N).")
        self.network_button.setEnabled(False)
        self.network_button.clicked.connect(self.ask_network)
        self.unary_box, self.refiner_box = QGroupBox("Unary"), QGroupBox("Refiner")
        for box, widget, stretch in ((self.unary_box, _loading_label(), 0), (self.refiner_box, _loading_label(), 1),
                                     (QGroupBox("Classes"), self.legend_scroll, 0)):
            QVBoxLayout(box).addWidget(widget)  # the unary picker and the refiner panel replace the labels
            if box is self.unary_box:
                box.layout().addWidget(self.network_button)
            column.addWidget(box, stretch)
            if box is self.refiner_box:
                column.addLayout(run_row)
                column.addWidget(self.progress)
        refiner = QDockWidget("Refinement")
        refiner.setObjectName("refinement")
        refiner.setWidget(side)
        side.setMinimumWidth(380)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, refiner)
        self.resizeDocks([images, refiner], [160, 400], Qt.Orientation.Horizontal)

    def _build_actions(self) -> dict[str, QAction]:
        specs = {
            "open": ("Open folder…", self.ask_folder, False), "previous": ("Previous", self.previous_image, False),
            "next": ("Next", self.next_image, False), "refine": ("Refine", self.refine_now, False),
            "cancel": ("Cancel", self.cancel_refine, False), "overlay": ("Overlay", self.canvas.set_overlay_visible,
                                                                         True),
            "boundary": ("Boundary only", self.canvas.set_boundary_only, True),
            "before": ("Before", self.canvas.set_show_before, True),
            "background": ("Background", self.canvas.set_show_background, True),
            "fit": ("Fit", self.canvas.fit, False), "undo": ("Undo", self.undo, False),
            "redo": ("Redo", self.redo, False), "accept": ("Accept", self.accept_mask, False),
            "export": ("Export…", self.export_masks, False), "tune": ("Fine-tune…", self.fine_tune, False),
            "quit": ("Quit", self.close, False), "shortcuts": ("Keyboard shortcuts", self.show_shortcuts, False),
            "about": ("About CRF Studio", self.show_about, False),
            "network": ("Network…", self.ask_network, False),
        }
        actions = {}
        for name, (text, slot, checkable) in specs.items():
            action = QAction(text, self)
            keys = [QKeySequence(k) for k in SHORTCUTS[name]]
            action.setShortcuts(keys)
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            what = DESCRIPTIONS.get(name, text)
            action.setToolTip(f"{what} ({', '.join(k.toString() for k in keys)})" if keys else what)
            action.setCheckable(checkable)
            (action.toggled if checkable else action.triggered).connect(slot)
            self.addAction(action)
            actions[name] = action
        actions["overlay"].setChecked(True)
        actions["cancel"].setEnabled(False)
        actions["before"].setToolTip("Show the unary's labels, before refinement (B)")
        actions["background"].setToolTip("Draw class 0 as well (G); hidden by default as the usual background.")
        actions["accept"].setToolTip("Save the mask as shown as a new revision in the folder's project (A); edits "
                                     "are saved by themselves.")
        actions["network"].setToolTip("Use a segmentation network (torchvision weights, TorchScript or .pt2) as the "
                                      "unary source of this folder (Ctrl+Shift+N).")
        for name in ("undo", "redo", "accept", "export", "tune", "network"):
            actions[name].setEnabled(False)
        return actions

    def _build_menus(self) -> None:
        """File, Edit, View, Refine and Help menus over the same actions as the toolbars (keys shown beside)."""
        menus = {"&File": ("open", None, "export", None, "quit"),
                 "&Edit": ("undo", "redo", None, "accept", None, "navigate", "brush", "eraser", "shrink", "grow"),
                 "&View": ("previous", "next", None, "overlay", "boundary", "before", "background", None, "fit"),
                 "&Refine": ("network", None, "refine", "cancel", None, "tune"), "&Help": ("shortcuts", None, "about")}
        bar = self.menuBar()
        for title, names in menus.items():
            menu = bar.addMenu(title)
            for name in names:
                menu.addAction(self.qactions[name]) if name else menu.addSeparator()

    def show_shortcuts(self) -> None:
        """Help ▸ Keyboard shortcuts (F1): every action and its keys."""
        self.shortcuts_dialog = ShortcutsDialog(self.qactions, self)
        self.shortcuts_dialog.show()

    def show_about(self) -> None:
        """Help ▸ About: versions and the device the refiners run on (once the engine, which it names, is loaded)."""
        if not self.engine_ready:
            self.show_status(f"{LOADING} About opens when it is ready.")
            self.when_engine_ready(self.show_about)
            return
        self.about_box = help_dialogs.show_about(self, self.device_label.text().removeprefix("device: "))

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("main")
        for name in ("open", None, "previous", "next", None, "refine", "cancel", None, "overlay", "boundary",
                     "before", "background", "fit"):
            bar.addAction(self.qactions[name]) if name else bar.addSeparator()
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(DEFAULT_OPACITY * 100))
        self.opacity.setMaximumWidth(140)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(lambda v: self.canvas.set_opacity(v / 100))
        bar.addSeparator()
        bar.addWidget(QLabel(" Opacity "))
        bar.addWidget(self.opacity)

    def _build_edit_toolbar(self) -> None:
        self.addToolBarBreak()
        bar = self.addToolBar("Edit")
        bar.setObjectName("edit")
        for name in ("navigate", "brush", "eraser"):
            bar.addAction(self.qactions[name])
        self.brush_controls = BrushControls(self.tools)
        bar.addWidget(self.brush_controls)
        bar.addSeparator()
        for name in ("undo", "redo", "accept", None, "export", "tune"):
            bar.addAction(self.qactions[name]) if name else bar.addSeparator()

    def _build_status_bar(self) -> None:
        self.message = QLabel("Open a folder of images with masks or probability maps (Ctrl+O).")
        self.timing = QLabel("")
        self.device_label = QLabel(f"device: {self._device or '…'}")
        self.save_label = QLabel("")
        self.save_label.setToolTip("The last mask revision saved into the folder's project (.crfstudio).")
        bar = self.statusBar()
        bar.addWidget(self.message, 1)
        self.network_label = QLabel("")
        self.network_progress = QProgressBar()
        self.network_progress.setMaximumWidth(120)
        self.network_progress.setMaximumHeight(14)
        self.network_cancel = QPushButton("Stop network")
        self.network_cancel.setToolTip("Stop the network's folder run after the image in progress (cached images "
                                       "stay cached).")
        for widget in (self.network_label, self.network_progress, self.network_cancel):
            bar.addPermanentWidget(widget)
            widget.setVisible(False)
        bar.addPermanentWidget(self.save_label)
        bar.addPermanentWidget(self.timing)
        bar.addPermanentWidget(self.device_label)

    def focus_canvas(self) -> None:
        """Give the keyboard focus to the canvas (after Enter or Escape in a number box)."""
        self.canvas.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def show_status(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` in the status bar, in red for an error."""
        self.message.setText(text)
        self.message.setStyleSheet("color: #d93025;" if error else "")

    def show_error(self, title: str, message: str) -> None:
        """An error the user caused by an action (a file, a preset): status bar and a non-blocking message box."""
        self.show_status(message.splitlines()[0], error=True)
        self.error_box = files.show_error(self, title, message)

    # --- images ------------------------------------------------------------------------------------------------
    def ask_folder(self) -> None:
        path = files.ask_folder(self, self.folder.root if self.folder else "")
        if path is not None:
            self.open_folder(path)

    def open_folder(self, path: str | Path) -> bool:
        """Scan ``path`` and open its first image that opens; False (with a message) if the folder cannot be used.

        From here on the window shows the new folder whatever its images hold: an image that cannot be opened is
        marked in the list with the reason, and when none opens the canvas is empty, never an image of the folder
        shown before. Edits land in the project of the folder shown.
        """
        try:
            folder = scan_folder(path)
        except (OSError, ValueError) as exc:
            self.show_error("Open folder", str(exc))
            return False
        if not self.engine_ready:
            self._preview_folder(folder)
            return True
        self._carried = self._carried_settings()
        self._clear_document()
        self.project_sync.open_folder(folder.root)
        self.folder, self.index = folder, -1
        self.network_jobs.set_folder(folder.root)
        self.bad_images = {}
        self._histories = {}
        self.save_label.setText("")
        for name in ("export", "tune", "network"):
            self.qactions[name].setEnabled(True)
        self.network_button.setEnabled(True)
        self.image_list.blockSignals(True)
        self.image_list.clear()
        self.image_list.addItems([entry.stem for entry in folder.entries])
        self.image_list.blockSignals(False)
        self.setWindowTitle(f"CRF Studio — {folder.root}")
        for index in range(len(folder)):
            if self._open(index, report=False):
                break
        if self.bad_images:
            self._report_bad_images()
        return True

    def open_index(self, index: int) -> bool:
        """Open image ``index`` of the folder, keeping the refiner, its parameters and the mask confidence."""
        if self.folder is None or not 0 <= index < len(self.folder) or index == self._shown_index:
            return False
        if not self.engine_ready:
            return self._preview(index)
        return self._open(index, report=True)

    @property
    def _shown_index(self) -> int:
        """The image shown: the document's, or while the engine loads the one shown alone (-1: none)."""
        return self.index if self.engine_ready else self._preview_index

    def _preview_folder(self, folder: ImageFolder) -> None:
        """Show ``folder`` while the engine loads: its list, title, classes and first image that loads, without
        unaries; :meth:`_attach_engine` opens it for real (and reports the images that cannot be opened)."""
        self.folder, self.index, self._preview_index = folder, -1, -1
        self.bad_images = {}
        self.canvas.set_document(None)
        with QSignalBlocker(self.image_list):
            self.image_list.clear()
            self.image_list.addItems([entry.stem for entry in folder.entries])
        self.setWindowTitle(f"CRF Studio — {folder.root}")
        self._show_classes(())
        for index in range(len(folder)):
            if self._preview(index):
                break
        if self._engine_error:
            self.show_status(self._engine_error, error=True)

    def _preview(self, index: int) -> bool:
        """Show image ``index`` alone (no unary, nothing to edit) while the engine loads; False if it cannot be
        read (marked in the list)."""
        from crfcore.io import load_image

        entry = self.folder.entries[index]
        try:
            image = load_image(entry.image)
        except (OSError, ValueError) as exc:
            self._mark_bad(index, f"Cannot open {entry.stem}: {exc}")
            self._select_row(self._preview_index)
            return False
        self._preview_index = index
        self._select_row(index)
        self.canvas.show_image(image)
        self._show_classes(tuple(entry.class_names or ()))
        then = ("its probability map is shown and refined" if entry.probs is not None else
                "its mask is shown and refined" if entry.mask is not None else "painting starts")
        self.show_status(f"{entry.stem}: {image.shape[1]}×{image.shape[0]}. {LOADING} {then[0].upper()}{then[1:]} "
                         f"as soon as it is ready.")
        return True

    def _open(self, index: int, *, report: bool) -> bool:
        from .document import ImageDocument

        entry = self.network_jobs.entry_for(self.folder.entries[index])
        self._carried = self._carried_settings()
        try:
            document = ImageDocument.open(entry, parent=self, **self._carried)
        except (OSError, ValueError) as exc:
            self._mark_bad(index, f"Cannot open {entry.stem}: {exc}")
            if report:
                self._report_bad_images()
            self._select_row(self.index)
            return False
        previous = self.document
        self.index = index
        self._select_row(index)
        self._set_document(document)
        if previous is not None:
            self._histories[previous.entry.image] = previous.history
            previous.deleteLater()
        if self.network_jobs.network is not None and self.network_jobs.cached_file(entry) is None:
            self.network_jobs.run([entry])
            self.show_status(f"Running the network on {entry.stem}…")
        return True

    def _carried_settings(self) -> dict:
        """The refiner, its parameters and the mask settings, carried from the shown image to the next one."""
        doc = self.document
        if doc is None:
            return self._carried
        return {"method": doc.method, "params": doc.all_params(), "unary_settings": doc.unary_settings,
                "roughness": doc.roughness}

    def _select_row(self, index: int) -> None:
        with QSignalBlocker(self.image_list):
            self.image_list.setCurrentRow(index)

    def _mark_bad(self, index: int, reason: str) -> None:
        """Mark image ``index`` in the list as one that cannot be opened, with ``reason`` as its tooltip."""
        self.bad_images[index] = reason
        item = self.image_list.item(index)
        item.setText(f"{self.folder.entries[index].stem}  ✕")
        item.setForeground(QColor("#d93025"))
        item.setToolTip(reason)

    def _report_bad_images(self) -> None:
        bad = [self.bad_images[i] for i in sorted(self.bad_images)]
        shown = (f"showing {self.document.entry.stem}" if self.document is not None
                 else "no image of this folder could be opened")
        self.show_error("Open image", f"{len(bad)} image(s) of {self.folder.root} cannot be opened (marked ✕ in the "
                        f"list); {shown}.\n" + "\n".join(bad))

    def _clear_document(self) -> None:
        """Show nothing: no image, no unary, no refiner bound; a pending edit is saved first."""
        self.canvas.end_stroke()
        self.scheduler.cancel()
        self._first_request = self.scheduler.latest_id + 1
        self.project_sync.watch(None)
        previous, self.document, self.index = self.document, None, -1
        self.canvas.set_document(None)
        self.unary_picker.set_document(None)
        self.panel.set_document(None)
        self._show_classes(())
        self.timing.setText("")
        for name in ("undo", "redo", "accept"):
            self.qactions[name].setEnabled(False)
        if previous is not None:
            previous.deleteLater()

    def next_image(self) -> None:
        if self.folder is not None:
            self.open_index(min(self._shown_index + 1, len(self.folder) - 1))

    def previous_image(self) -> None:
        self.open_index(max(self._shown_index - 1, 0))

    def _set_document(self, document: ImageDocument) -> None:
        self.canvas.end_stroke()  # a drag still held ends as an edit of the image it began on (and is saved)
        self.scheduler.cancel()
        self._first_request = self.scheduler.latest_id + 1
        self._match_presets(document)  # before a saved mask is restored: it must not be recomputed or cleared
        self.project_sync.watch(document)
        restored = self.project_sync.restore(document)
        if (history := self._histories.pop(document.entry.image, None)) is not None:
            try:
                document.adopt_history(history)
            except ValueError as exc:  # the unary's classes changed since: the strokes stay as saved, no history
                restored = f"{restored}; undo history dropped ({exc})" if restored else f"undo history dropped ({exc})"
        self.document = document
        document.method_changed.connect(self._on_method_changed)
        document.params_replaced.connect(lambda _m: self.schedule_refine(preview=False))
        document.unary_changed.connect(self._on_unary_changed)
        document.edited.connect(self._on_edited)
        self.timing.setText("")  # the last image's timing and save note, not this one's
        self.save_label.setText("")
        self.canvas.set_document(document)
        self.unary_picker.set_document(document)
        self.panel.set_document(document)
        self._show_classes(document.class_names)
        self.legend.set_labels(self.canvas.shown_labels())
        self._show_history()
        self.qactions["accept"].setEnabled(document.has_unary)
        if document.unary_kind == "strokes":
            self.tools.set_tool("brush")
            self.show_status(f"{document.entry.stem} has no mask or probability map: paint each class with the brush "
                             f"(D; pick the class in the legend) and the strokes alone make the mask; or choose a "
                             f"unary with … or Network…{'; ' + restored if restored else ''}")
        else:
            self.show_status(f"{document.entry.stem}: {document.image.shape[1]}×{document.image.shape[0]}, "
                             f"{document.num_classes} classes{'; ' + restored if restored else ''}")
        if document.result is None and document.job() is not None:
            self.refine_now()

    def _legend_row_height(self) -> int:
        return self.fontMetrics().height() + 8  # a legend row: the text, its swatch and the grid's spacing

    def _show_classes(self, names: tuple[str, ...]) -> None:
        """Legend rows and brush classes for ``names``; the legend shows them all up to :data:`LEGEND_ROWS`."""
        self.legend.set_classes(names)
        self.brush_controls.set_classes(names)
        self.legend_scroll.setMinimumHeight(min(len(names), LEGEND_ROWS) * self._legend_row_height())

    def _on_unary_changed(self) -> None:
        self._show_classes(self.document.class_names)
        self.legend.set_labels(self.canvas.shown_labels())
        self.qactions["accept"].setEnabled(True)
        self._match_presets(self.document)
        self.schedule_refine(preview=False)

    def _on_method_changed(self, method: str) -> None:
        doc = self.document
        settings = self.presets.mask_settings(method, doc.unary_kind)
        if settings is not None:  # this refiner's preset was tuned with its own unary settings
            doc.set_unary_settings(settings)
        self.refine_now()

    # --- presets -------------------------------------------------------------------------------------------------
    @property
    def auto_presets(self) -> bool:
        """Whether the shipped preset kind follows the unary source (mask, probabilities)."""
        return self.presets.auto

    @property
    def preset_kind(self) -> str | None:
        """The kind whose presets the parameters came from, None if none yet."""
        return self.presets.kind

    def choose_preset_kind(self, kind: str | None) -> None:
        """Use the shipped presets of ``kind`` for every refiner that has one (``crfcore.presets.KINDS``), or with
        None follow the unary source (:class:`~app.preset_policy.PresetPolicy`)."""
        doc = self.document
        change = self.presets.choose(kind, source_kind=doc.preset_kind if doc else None,
                                     unary=doc.unary_kind if doc else None, has_document=doc is not None)
        if change is not None:
            self._apply_presets(doc, change)
        elif doc is not None:
            self.panel.show_preset_kind(self.presets.kind, auto=self.presets.auto)

    def _match_presets(self, document: ImageDocument) -> None:
        """In auto mode, switch to the preset kind ``document``'s unary source calls for, if not already on it."""
        change = self.presets.follow(document.preset_kind, document.unary_kind)
        if change is not None:
            self._apply_presets(document, change)
        self.panel.show_preset_kind(self.presets.kind, auto=self.presets.auto)

    def _apply_presets(self, document: ImageDocument, change: PresetChange) -> None:
        from .widgets.refiner_panel import KIND_TITLES

        self.presets.applied(change)
        document.apply_preset(change.kind)
        self.panel.show_preset_kind(change.kind, auto=self.presets.auto)
        self.panel.show_source(f"the shipped {KIND_TITLES[change.kind]} presets")
        self.show_status(f"Using the {KIND_TITLES[change.kind]} presets ({change.reason}); the Presets box above "
                         f"the refiner tabs changes this.")

    # --- network unaries ---------------------------------------------------------------------------------------------
    def ask_network(self) -> None:
        """Network… (Ctrl+Shift+N): choose a model file, its class names and whether to run the whole folder."""
        if self.folder is None:
            return
        from .dialogs.network import NetworkDialog

        names = next((e.class_names for e in self.folder.entries if e.class_names), ())
        self.network_dialog = NetworkDialog(self, start=self.folder.root, folder_classes=tuple(names),
                                            device=self.scheduler.device)
        self.network_dialog.accepted.connect(lambda: self.use_network(
            self.network_dialog.network, self.network_dialog.classes(),
            whole_folder=self.network_dialog.whole_folder.isChecked()))
        self.network_dialog.open()

    def use_network_file(self, path: str | Path, *, whole_folder: bool = True) -> bool:
        """Use the model file at ``path`` for the open folder (``crf-studio FOLDER --model FILE``): class names from
        the file, else ``classes.json`` when the counts fit; False (with a message) if it cannot be loaded."""
        if self.folder is None:
            return False
        from .network import open_network

        try:
            network = open_network(path, device=self.scheduler.device)
        except (OSError, ValueError, RuntimeError) as exc:
            self.show_error("Network", f"Cannot use {Path(path).name} as the unary source: {exc}")
            return False
        names = next((e.class_names for e in self.folder.entries if e.class_names), ())
        if network.file_classes:
            names = network.file_classes
        elif network.num_classes is not None and len(names) != network.num_classes:
            names = ()
        self.use_network(network, names, whole_folder=whole_folder)
        return True

    def use_network(self, network: Network, classes: tuple[str, ...] = (), *, whole_folder: bool = True) -> None:
        """Make ``network`` the folder's unary source: its probabilities for the shown image at once (from the
        project's cache when computed before), the whole folder in the background when ``whole_folder``; the
        network-output presets are chosen."""
        if self.folder is None:
            return
        self.network_jobs.use(network, classes)
        if not self.auto_presets:
            self.choose_preset_kind("network_output")
        entries = list(self.folder.entries)
        if self.document is not None:
            current = self.folder.entries[self.index]
            entries.remove(current)
            entries.insert(0, current)
            if self.network_jobs.cached_file(current) is not None:
                self._reopen()
        self.network_jobs.run(entries if whole_folder else entries[:1])
        self.show_status(f"Network: {network.describe()}")

    def _reopen(self) -> None:
        """Open the shown image again (its unary source changed) and refine it."""
        index, self.index = self.index, -1
        if self._open(index, report=True):
            self.refine_now()
        else:
            self.index = index

    def _on_network_ready(self, stem: str, path: object) -> None:
        if self.document is not None and self.document.entry.stem == stem and self.document.entry.probs != path:
            self._reopen()

    def _on_network_progress(self, done: int, total: int) -> None:
        self.network_progress.setRange(0, max(total, 1))
        self.network_progress.setValue(done)
        self.network_label.setText(f"network: {done}/{total} images")

    def _on_network_busy(self, busy: bool) -> None:
        for widget in (self.network_label, self.network_progress, self.network_cancel):
            widget.setVisible(busy)

    # --- editing -------------------------------------------------------------------------------------------------
    def pick_class(self, label: int) -> None:
        """Make ``label`` the brush's class and, from the navigate tool, switch to the brush."""
        self.tools.set_label(label)
        if self.tools.tool == "navigate":
            self.tools.set_tool("brush")

    def undo(self) -> None:
        if self.document is not None and not self.document.undo():
            self.show_status("Nothing to undo.")

    def redo(self) -> None:
        if self.document is not None and not self.document.redo():
            self.show_status("Nothing to redo.")

    def accept_mask(self) -> None:
        """Save the mask as shown as a new revision (A)."""
        if self.document is not None and (revision := self.project_sync.accept()) is not None:
            self.show_status(f"{self.document.entry.stem}: saved as revision {revision}.")

    def export_masks(self) -> None:
        """Open the Export dialog for the folder's project (Ctrl+E); a pending edit is saved first."""
        if self.folder is not None:
            from .dialogs.export import ExportDialog
            from .exporting import RefineSettings

            self.project_sync.flush()
            names = self.document.class_names if self.document is not None else ()
            doc = self.document
            settings = None if doc is None else RefineSettings(
                doc.method, doc.params(), doc.unary_settings, doc.roughness, tuple(doc.class_names),
                self.scheduler.device)
            self.export_dialog = ExportDialog(self.folder.root, names, self, void=self.folder.void,
                                              entries=self.folder.entries, settings=settings)
            self.export_dialog.open()

    def fine_tune(self) -> None:
        """Open the Fine-tune dialog for the current refiner (Ctrl+T)."""
        if self.folder is not None and self.document is not None and self.document.has_unary:
            from .dialogs.tune import TuneDialog

            self.tune_dialog = TuneDialog(self.folder, self.document, self)
            self.tune_dialog.applied.connect(self.panel.show_source)
            self.tune_dialog.open()

    def _on_edited(self, action: str) -> None:
        self._show_history()
        self.schedule_refine(preview=False)

    def _show_history(self) -> None:
        doc = self.document
        for name, able, what in (("undo", doc.can_undo, doc.undo_name), ("redo", doc.can_redo, doc.redo_name)):
            action = self.qactions[name]
            action.setEnabled(able)
            keys = ", ".join(k.toString() for k in action.shortcuts())
            action.setToolTip(f"{name.capitalize()} {what} ({keys})" if what else f"{DESCRIPTIONS[name]} ({keys})")

    # --- refinement --------------------------------------------------------------------------------------------
    def refine_now(self) -> None:
        """Run the current refiner at full resolution now; without an image or a unary, say why not."""
        job = self.document.job() if self.document is not None else None
        if not self.engine_ready:
            self.show_status(self._engine_error or f"{LOADING} The image is refined as soon as it is ready.",
                             error=bool(self._engine_error))
        elif job is not None:
            self.scheduler.submit(job)
        elif self.document is None:
            self.show_status("Nothing to refine: open a folder of images first (Ctrl+O).", error=True)
        elif self.document.unary_kind == "strokes":
            self.show_status(f"Nothing to refine yet: {self.document.entry.stem} starts from strokes; paint the "
                             f"classes with the brush (D) first.")
        else:
            self.show_status(f"Nothing to refine: {self.document.entry.stem} has no mask or probability map yet; "
                             f"choose one with the … button under Unary.", error=True)

    def schedule_refine(self, *, preview: bool) -> None:
        """Run after the debounce interval (a preview while a slider is dragged)."""
        job = self.document.job(preview=preview) if self.document is not None else None
        if job is not None:
            self.scheduler.schedule(job)

    def cancel_refine(self) -> None:
        if self.scheduler is not None:
            self.scheduler.cancel()

    def _on_started(self, request_id: int, preview: bool) -> None:
        self.progress.setValue(0)
        self.show_status("Previewing…" if preview else "Refining…")

    def _on_progress(self, request_id: int, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_finished(self, request_id: int, result: RefineResult) -> None:
        if self.document is None or request_id < self._first_request:
            return
        try:
            self.document.set_result(result)
        except ValueError as exc:
            self.show_status(str(exc), error=True)
            return
        self.project_sync.result_arrived()
        self.progress.setValue(self.progress.maximum())
        self.timing.setText(format_timing(result))
        self.device_label.setText(f"device: {result.timing['device']}")
        self.show_status(f"{self.document.entry.stem}: {'preview' if result.preview else 'refined'} with "
                         f"{result.method}")

    def _on_failed(self, request_id: int, message: str) -> None:
        if request_id >= self._first_request:
            self.show_status(f"Refinement failed: {message}", error=True)

    def _on_cancelled(self, request_id: int) -> None:
        if request_id >= self._first_request:
            self.show_status("Refinement cancelled; the previous mask is kept.")

    def _on_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        self.qactions["cancel"].setEnabled(busy)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        if self.engine_ready:
            self.scheduler.shutdown()
            self.network_jobs.cancel()
            self.network_jobs.runner.wait()
            self.project_sync.close()
        self._engine_waiting.clear()
        self._closed = True
        super().closeEvent(event)
