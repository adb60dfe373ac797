"""Prediction with a trained run: `Predictor.from_workdir(RUN).predict(paths)`."""

from sedl_jax.predict.predictor import NoUsableInput, Prediction, Predictor

__all__ = ["NoUsableInput", "Prediction", "Predictor"]
