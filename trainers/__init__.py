"""Training for planner architectures: distillation recipes, audio data, teachers, losses and engines.

recipe = trainers.load_recipe("recipes/distill.yaml")
trainers.train(planner.load("arch.yaml"), recipe, "runs/a1")   # same call again resumes
"""

from trainers.data import BatchStream, read_audio, read_labels, read_manifest, scan_folder
from trainers.distill import Distiller
from trainers.evaluate import ProbeTask, evaluate, load_task
from trainers.losses import align_frames, distillation_loss, frame_distance, layer_pairs
from trainers.masking import compute_span_mask
from trainers.proxy import distill_proxy
from trainers.recipe import CompressionConfig, Recipe, dump_recipe, load_recipe, loads_recipe, recipe_from_dict
from trainers.safeio import CheckpointError
from trainers.task import TaskLoss, TaskModel
from trainers.teacher import TeacherOutput, load_teacher
from trainers.train import DivergedError, RunConflictError, TrainResult, build_student, latest_checkpoint, train

__all__ = [
    "BatchStream",
    "CheckpointError",
    "CompressionConfig",
    "Distiller",
    "DivergedError",
    "ProbeTask",
    "Recipe",
    "RunConflictError",
    "TaskLoss",
    "TaskModel",
    "TeacherOutput",
    "TrainResult",
    "align_frames",
    "build_student",
    "compute_span_mask",
    "distill_proxy",
    "distillation_loss",
    "dump_recipe",
    "evaluate",
    "frame_distance",
    "latest_checkpoint",
    "layer_pairs",
    "load_recipe",
    "load_task",
    "load_teacher",
    "loads_recipe",
    "read_audio",
    "read_labels",
    "read_manifest",
    "recipe_from_dict",
    "scan_folder",
    "train",
]
