"""ROS parameters declared from a frozen config dataclass of the ROS-free layers.

Every field becomes a parameter with the field's default and a description: the field's `help`
metadata, or else its attribute docstring (the string literal right below the field in the class
body, the style of e.g. `PPOConfig`). Values are coerced to the field's type (YAML `5` for a float is fine), then
the dataclass validates itself in `__post_init__`. A bad value stops the node at start-up
with a message naming the parameter; live changes are refused (restart the node instead).
"""
import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from typing import Any, Dict, Type, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

T = TypeVar("T")


class ConfigError(ValueError):
    """A node parameter is invalid; the message says which and how to fix it."""


_ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
                int: Parameter.Type.INTEGER_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _attribute_docstrings(cls) -> Dict[str, str]:
    """name -> the string literal that follows the field's annotated assignment in the class
    body (whitespace collapsed); base classes first, so a subclass's own text wins."""
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):    # no source (e.g. made at run time)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.lru_cache(maxsize=None)
def field_descriptions(cls) -> Dict[str, str]:
    """name -> description of every field of the dataclass `cls`: its `help` metadata, else its
    attribute docstring, else ''."""
    docs = _attribute_docstrings(cls)
    return {f.name: f.metadata.get("help", "") or docs.get(f.name, "") for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin in (tuple, list):
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            return tuple(_coerce(name, v, item) for v in (value or ()))
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is float:
            return float(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"parameter '{name}': {value!r} is not a valid {getattr(hint, '__name__', hint)}")
    return value


def declare_config(node: Node, cls: Type[T], prefix: str = "") -> T:
    """Declare one parameter per field of `cls`, read them and build a validated `cls`."""
    hints = _field_types(cls)
    descriptions = field_descriptions(cls)
    values = {}
    for field in dataclasses.fields(cls):
        name = prefix + field.name
        hint = hints[field.name]
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        descriptor = ParameterDescriptor(description=descriptions[field.name],
                                         dynamic_typing=True)
        origin = typing.get_origin(hint)
        if origin in (tuple, list):
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if default:
                param = node.declare_parameter(name, list(default), descriptor)
            else:   # an empty list has no type: declare the array type (rclpy refuses a
                    # type together with dynamic_typing)
                descriptor.dynamic_typing = False
                param = node.declare_parameter(name, _ARRAY_TYPES[item], descriptor)
        else:
            param = node.declare_parameter(name, default, descriptor)
        value = param.value
        values[field.name] = default if value is None else _coerce(name, value, hint)
    try:
        config = cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{node.get_fully_qualified_name()}: invalid parameters: {exc}") from exc

    own = {prefix + f.name for f in dataclasses.fields(cls)}

    def _refuse(params):
        names = ", ".join(p.name for p in params if p.name in own)
        if not names:
            return SetParametersResult(successful=True)
        return SetParametersResult(
            successful=False,
            reason=f"{names}: lrm_ros parameters are read at start-up; restart the node "
                   "with the new value (--ros-args -p name:=value, or the params file)")

    node.add_on_set_parameters_callback(_refuse)
    return config
