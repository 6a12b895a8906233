"""Errors raised by captum_mamba, each naming the problem and the way out."""

from __future__ import annotations


class UnsupportedModuleError(TypeError):
    """The model contains module types that have no MambaLRP rule."""

    def __init__(self, module_types: dict[str, list[str]], hint: str | None = None) -> None:
        self.module_types = module_types
        listing = "; ".join(
            f"{name} (at {', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
            for name, paths in module_types.items()
        )
        hint = hint or (
            "Register one with captum_mamba.register_rule(ModuleType, rule), pass rules={ModuleType: rule} "
            "to the explainer, or set module.rule on the instance."
        )
        super().__init__(f"MambaLRP has no rule for these module types: {listing}. {hint}")


class MissingDependencyError(ImportError):
    """An optional dependency needed by the requested feature is not installed."""

    def __init__(self, package: str, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'captum-mamba[{extra}]'"
        )


class ModelNotFoundError(TypeError):
    """No nn.Module could be found behind a forward function."""
