"""``torch.nn.Module`` definitions only: the DeepSTORM estimator φ and the UNet wrapper of Ψ."""

from .deepstorm import DeepSTORM, DeepSTORMConfig

__all__ = ["DeepSTORM", "DeepSTORMConfig"]
