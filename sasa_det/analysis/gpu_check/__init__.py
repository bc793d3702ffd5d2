"""One prepared check of the CUDA path: correctness, layer and detector speed, a short real training.

:func:`run_gpu_check` runs the sections of :data:`SECTIONS` one after the other, each in its own Python
process with its own timeout, so a crash (a kernel fault poisons the CUDA context) or a hang costs that
section only. Each section appends one JSON line per result to ``<out>/gpu_check.jsonl`` as soon as it
has it, every line with a ``section`` field; the parent adds one ``status`` line per section (``ok``,
``failed``, ``crashed``, ``timeout``, ``skipped``). Kernel compile caches (Triton, Inductor) start empty
under ``<out>/caches``, so the times include cold compiles, as a user's first run has them.

``dry_run=True`` runs every section on the CPU at tiny sizes (the Triton kernels under Triton's
interpreter): what the test suite runs, so the check cannot rot.

Sections:

* ``environment`` -- torch, CUDA, Triton, the GPU; packages a bare PyTorch image lacks.
* ``correctness_sasa`` -- every SASA implementation on the device (float32, bfloat16; head widths 8 and
  32; masked and zero-padded borders; an odd-sized map) against the float64 CPU reference, forward and
  all gradients.
* ``correctness_stem_aa`` -- the attention stem and AA (at the presets' head widths, with the path that
  ran) against their float64 CPU references, in float32 and under bfloat16 autocast; the stem at 1024²
  and 800×1344 against the CPU.
* ``layers`` -- forward+backward time and peak memory against a 3×3 conv (SASA at 64 channels/8 heads
  on a 200×336 map and at 256 channels on 50×84; the stem on an 800×1344 image; AA at 64×64 tokens
  against SDPA without relative logits), each row naming the path that ran.
* ``model_*`` -- RetinaNet with a conv, SASA and AA ResNet-50: training images/s at 1024², batch 4,
  bfloat16 autocast, and the time to the first step (compiles included).
* ``train_eval`` -- the experiment config the caller gives (``tools/gpu_check.py``: the COCO RetinaNet with
  a SASA-ResNet-50) trained for 20 steps with bfloat16 AMP on a generated COCO-format set, then its
  checkpoint evaluated, by the library functions the training and evaluation tools run.

The package reaches nothing outside itself: each section's process runs this package
(``python -m sasa_det.analysis.gpu_check --section NAME``), and the experiment config is an argument.

Modules: :mod:`.processes` (:func:`run_gpu_check`), :mod:`.sections` (the table and one section's run),
:mod:`.results` (the JSON lines, the table), and the sections by job: :mod:`.environment`,
:mod:`.correctness`, :mod:`.speed`, :mod:`.train_eval`.
"""

from .environment import MISSING_PACKAGE_HINT
from .processes import run_gpu_check
from .results import format_results, read_results
from .sections import SECTIONS, Section

__all__ = ["MISSING_PACKAGE_HINT", "SECTIONS", "Section", "format_results", "read_results", "run_gpu_check"]
