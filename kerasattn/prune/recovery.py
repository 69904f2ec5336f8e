"""Recovery after pruning: a short fine-tuning, optionally distilled.

Distillation trains the pruned model (the student) on a mix of the task's
loss and Hinton et al.'s soft-target loss against the unpruned model (the
teacher): `fine_tune` wraps both in one functional model whose output packs
the student's logits and the teacher's (held fixed), so plain `fit` trains
it on any backend.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Optional

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasattn")
class PackedLogits(keras.layers.Layer):
    """`[student | teacher]` on the last axis, no gradient into the teacher's half.

    Call arguments:
        student: the student's logits `(..., C)`.
        teacher: the teacher's logits `(..., C)`.

    Returns:
        `(..., 2C)`.

    Example:

    ```python
    packed = PackedLogits()(student_logits, teacher_logits)
    ```
    """

    def call(self, student, teacher):
        return ops.concatenate([student, ops.stop_gradient(ops.cast(teacher, student.dtype))], -1)

    def compute_output_spec(self, student, teacher):
        shape = tuple(student.shape[:-1]) + (2 * student.shape[-1],)
        return keras.KerasTensor(shape, dtype=student.dtype)


@keras.saving.register_keras_serializable(package="kerasattn")
class DistillationLoss(keras.losses.Loss):
    """The task's loss mixed with a soft-target loss against a teacher's logits.

    `(1 - alpha) * loss(y, s) + alpha * T² * KL(softmax(t / T) ‖ softmax(s / T))`
    for student logits `s` and teacher logits `t`, packed as `[s | t]` on the
    last axis of `y_pred` (`PackedLogits`).

    Args:
        loss: the task's loss on the student's logits (a Keras loss on
            logits); defaults to sparse categorical cross-entropy from logits.
        alpha: weight of the soft-target term, in [0, 1].
        temperature: softmax temperature `T` > 0 of the soft targets.
        **kwargs: `keras.losses.Loss` arguments such as `name`.

    Returns:
        The loss per example (reduced by Keras as any loss).

    Example:

    ```python
    combined.compile(optimizer="adam", loss=DistillationLoss(alpha=0.5, temperature=2.0))
    ```
    """

    def __init__(self, loss=None, alpha: float = 0.5, temperature: float = 2.0,
                 name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"Expected `alpha` in [0, 1], received: alpha={alpha!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or temperature <= 0:
            raise ValueError(f"Expected `temperature` > 0, received: temperature={temperature!r}")
        self.task_loss = keras.losses.get(loss) if loss is not None else \
            keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1] // 2
        student, teacher = y_pred[..., :classes], y_pred[..., classes:]
        task = self.task_loss(y_true, student) if self.alpha < 1 else 0.0
        if isinstance(task, (int, float)) or len(task.shape) == 0:
            task = task * ops.ones(ops.shape(student)[:-1])
        soft_teacher = ops.softmax(teacher / self.temperature, axis=-1)
        log_student = ops.log_softmax(student / self.temperature, axis=-1)
        log_teacher = ops.log_softmax(teacher / self.temperature, axis=-1)
        kl = ops.sum(soft_teacher * (log_teacher - log_student), axis=-1)
        return (1 - self.alpha) * task + self.alpha * self.temperature**2 * kl

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "loss": keras.losses.serialize(self.task_loss),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }


class _TeacherLogits(keras.layers.Layer):
    """The teacher's logits, always in inference mode (a functional model would
    pass `fit`'s `training=True` on to it), with no gradient."""

    def __init__(self, teacher: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher

    def call(self, inputs):
        return ops.stop_gradient(self.teacher(inputs, training=False))

    def compute_output_spec(self, inputs):
        return self.teacher.compute_output_spec(inputs)


def _graph_of(model: keras.Model, name: str) -> keras.Model:
    """A plain functional model on `model`'s layers: no compiled state (whose
    unbuilt metrics a model holding it would report) and a name of its own."""
    return keras.Model(model.input, model.output, name=name)


def distillation_model(student: keras.Model, teacher: keras.Model) -> keras.Model:
    """A functional model from the student's inputs to `PackedLogits` of both.

    Training it trains the student's layers; the teacher runs in inference
    mode and gets no gradient (freeze it, as `fine_tune` does, so the
    optimizer leaves it alone).

    Args:
        student: a functional model (the pruned one).
        teacher: a functional model with the same inputs and outputs.

    Returns:
        The model, uncompiled.
    """
    structure = student.input

    def fresh_input(name, tensor):
        return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name)

    if isinstance(structure, dict):
        inputs = {name: fresh_input(name, tensor) for name, tensor in structure.items()}
    else:
        inputs = keras.tree.map_structure(lambda t: fresh_input(None, t), structure)
    teacher_logits = _TeacherLogits(_graph_of(teacher, "teacher"), name="teacher_logits")(inputs)
    student_logits = _graph_of(student, "student")(inputs)
    packed = PackedLogits(name="packed_logits")(student_logits, teacher_logits)
    return keras.Model(inputs, packed, name="distillation")


def fine_tune(
    model: keras.Model,
    batches: Iterable,
    steps: int,
    loss=None,
    teacher: Optional[keras.Model] = None,
    alpha: float = 0.5,
    temperature: float = 2.0,
    learning_rate: float = 1e-4,
    verbose: int = 0,
    callbacks: Optional[list] = None,
) -> keras.callbacks.History:
    """A short fine-tuning of a pruned model, optionally distilled from `teacher`.

    Args:
        model: the pruned model (trained in place).
        batches: `(x, y)` or `(x, y, sample_weight)` batches: a repeating
            `tf.data.Dataset`, a generator, or a list (cycled through).
        steps: number of optimizer steps.
        loss: the task's loss on the model's logits; defaults to sparse
            categorical cross-entropy from logits.
        teacher: optional unpruned model with the same inputs and outputs;
            with it, the loss is `DistillationLoss(loss, alpha, temperature)`.
        alpha: weight of the teacher's soft targets.
        temperature: temperature of the soft targets.
        learning_rate: AdamW's learning rate.
        verbose: `fit`'s verbosity.
        callbacks: optional `keras.callbacks.Callback`s for `fit`.

    Returns:
        The `fit` history.

    Example:

    ```python
    fine_tune(pruned, train_dataset.repeat(), steps=200, teacher=original)
    ```
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Expected `steps` to be a positive int, received: steps={steps!r}")
    if isinstance(batches, (list, tuple)):
        # Keras takes generators, not other iterators.
        batches = (batch for batch in itertools.cycle(batches))
    task_loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trained = _graph_of(model, "student")
    teacher_trainable = None
    if teacher is not None:
        trained = distillation_model(model, teacher)
        task_loss = DistillationLoss(task_loss, alpha, temperature)
        teacher_trainable, teacher.trainable = teacher.trainable, False
    try:
        trained.compile(optimizer=keras.optimizers.AdamW(learning_rate), loss=task_loss)
        return trained.fit(batches, steps_per_epoch=steps, epochs=1, verbose=verbose,
                           shuffle=False, callbacks=callbacks)
    finally:
        if teacher is not None:
            teacher.trainable = teacher_trainable
