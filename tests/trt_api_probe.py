"""Check sam2trt's TensorRT and cuda-python code against the real bindings (run in a subprocess).

``python -m tests.trt_api_probe`` imports the real ``tensorrt_bindings`` (as
``tensorrt``) and ``cuda.bindings.runtime`` prepared by :mod:`tests.real_api`,
and prints one JSON report. One process per stack: TensorRT 10 and 11 are
both called ``tensorrt_bindings`` and cannot share a process.

What it does:

1. **Uses in the source.** Every module of the ``sam2trt`` package is parsed
   with ``ast`` and interpreted abstractly: names bound to the tensorrt or
   cuda-python module (imports, or values flowing from them through
   assignments, ``self`` attributes, calls of project functions and methods,
   and annotations) are followed. Each attribute taken from them must exist
   on the real module, class or enum; each call must bind to one overload of
   the pybind11 signature in ``__doc__`` (cuda-python: ``inspect.signature``),
   positional count, keyword names and, where the argument's type is known,
   its type (an enum where an enum is declared, a TensorRT class or a
   subclass of it, str / int / bool / buffer). Return types come from the
   signatures, so ``builder.create_network(...)`` is an ``INetworkDefinition``.
   A call of a method whose name is a TensorRT method (or a ``cuda*``
   function) on a receiver the walk could not type is reported as unresolved.
2. **Stand-ins.** ``tests/fakes``: every class, method (with its parameter
   names), property and enum member (with its value) of the fake tensorrt
   and cuda-python modules must exist in the real ones.
3. **Precision path.** Whether ``BuilderFlag.FP16``, ``BuilderFlag.TF32``
   (cleared for the preprocessing engines) and
   ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exist, and the flags
   ``sam2trt.engine.build.network_flags`` gives.
4. **Failures without the library.** ``trt.Logger`` works; ``trt.Builder`` and
   ``trt.Runtime`` raise; sam2trt turns that into a one-line RuntimeFailure.
5. **cuda-python calls, run.** The TensorRT runner (on the fake engine), the
   preprocessing runner (both variants, on fake engines that run the
   preprocessing ONNX with ONNX Runtime; weights uploaded once per frame size)
   and machine detection run with a cuda-python module whose every function
   first calls the real one with the project's arguments (types are checked by
   the real function, which returns error 35 without a driver) and then the
   fake, so the flow goes on. Every cudart function the source calls must be
   exercised this way.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import pathlib
import re
import sys
import traceback
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sam2trt"
TRT_PREFIXES = ("tensorrt_bindings.tensorrt.", "tensorrt.")
_SIG = re.compile(r"^(?:\d+\.\s+)?(?P<name>\w*)\((?P<params>.*)\)\s*->\s*(?P<ret>.+?)\s*$")


# ----------------------------------------------------------------------------- signatures
class Sig:
    """One call signature: ``params`` = [(name, annotation, has_default)] without ``self``."""

    def __init__(self, params, ret="", varargs=False, varkw=False):
        self.params, self.ret, self.varargs, self.varkw = params, ret, varargs, varkw

    def __repr__(self):
        ps = ", ".join(f"{n}: {a}" + (" = ..." if d else "") for n, a, d in self.params)
        return f"({ps}) -> {self.ret}"


def _split_top(s: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def pybind_sigs(doc: str | None, name: str, drop_self: bool = True) -> list[Sig]:
    """The signatures in a pybind11 docstring (all overloads)."""
    sigs = []
    for line in (doc or "").splitlines():
        m = _SIG.match(line.strip())
        if not m or m["name"] != name:
            continue
        params, varargs, varkw = [], False, False
        for p in _split_top(m["params"]):
            if p.startswith("**"):
                varkw = True
                continue
            if p.startswith("*"):
                varargs = True
                continue
            pname, _, rest = p.partition(":")
            ann, _, default = rest.partition(" = ")
            params.append((pname.strip(), ann.strip(), bool(default)))
        if varargs and varkw and not params:
            continue  # the "(*args, **kwargs)" header of an overloaded function
        if drop_self and params:
            params = params[1:]
        sigs.append(Sig(params, m["ret"]))
    return sigs


def python_sig(fn) -> Sig | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params, varargs, varkw = [], False, False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            varargs = True
        elif p.kind is p.VAR_KEYWORD:
            varkw = True
        elif p.name != "self":
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
            params.append((p.name, "" if p.annotation is p.empty else ann, p.default is not p.empty))
    return Sig(params, "", varargs, varkw)


def callable_sigs(obj, name: str, drop_self: bool) -> list[Sig]:
    if type(obj).__name__ in ("instancemethod", "builtin_function_or_method"):
        return pybind_sigs(obj.__doc__, name, drop_self)
    s = python_sig(obj)
    return [s] if s else []


# ----------------------------------------------------------------------------- abstract values
# ("mod", kind)              the tensorrt ("trt") or cuda-python ("cudart") module
# ("ext", kind, obj)         a real class, function or nested class taken from it
# ("inst", kind, cls)        an instance of a real class (enum members included)
# ("bound", kind, cls, name) a real method of an instance
# ("py", type)               a Python builtin value
# ("tuple", (values...))     a known tuple (for *args)
# ("pymod", m) / ("pyfunc", m, name) / ("pycls", m, name) / ("pyobj", m, name)
# ("pybound", m, cls, name)  project modules, functions, classes, instances, methods
# None                       unknown


class Walker:
    """The abstract interpreter of step 1 (module docstring).

    Args:
        trt, cudart: the real modules.
        sources: ``{module name: source text}`` to walk instead of the ``sam2trt`` package.
    """

    def __init__(self, trt, cudart, sources: dict[str, str] | None = None):
        self.ext = {"trt": trt, "cudart": cudart}
        self.modules: dict[str, ast.Module] = {}
        self.files: dict[str, str] = {}
        if sources is None:
            sources = {}
            for path in sorted(PACKAGE.rglob("*.py")):
                rel = path.relative_to(ROOT)
                name = ".".join(rel.with_suffix("").parts)
                if name.endswith(".__init__"):
                    name = name[: -len(".__init__")]
                sources[name] = path.read_text()
                self.files[name] = str(rel)
        for name, text in sources.items():
            self.files.setdefault(name, name.replace(".", "/") + ".py")
            self.modules[name] = ast.parse(text, self.files[name])
        self.attrs: dict[tuple, dict] = {}
        self.memo: dict = {}
        self.stack: set = set()
        self.uses: dict[str, set] = {"trt": set(), "cudart": set()}
        self.problems: dict[str, list] = {}
        self.sites: dict[tuple, bool] = {}  # (file, line, col, attr) -> receiver typed in some analysis
        self.cudart_calls: set = set()
        self.api_names = self._api_method_names()
        self._imports: dict = {}

    # -- helpers --------------------------------------------------------------
    def _api_method_names(self) -> dict[str, set]:
        trt = self.ext["trt"]
        names = set()
        for v in vars(trt).values():
            if isinstance(v, type):
                for k, a in vars(v).items():
                    if not k.startswith("_") and type(a).__name__ == "instancemethod":
                        names.add(k)
        generic = set()
        for t in (dict, list, str, bytes, set, tuple, object, int, np.ndarray, pathlib.Path, types.SimpleNamespace,
                  io.BufferedWriter, io.TextIOWrapper):
            generic |= set(dir(t))
        return {"trt": names - generic, "cudart": {n for n in dir(self.ext["cudart"]) if n.startswith("cuda")}}

    def problem(self, where: str, msg: str) -> None:
        self.problems.setdefault(f"{where}: {msg}", [])

    def where(self, ctx, node) -> str:
        return f"{self.files[ctx['module']]}:{getattr(node, 'lineno', 0)}"

    def ext_value(self, kind, obj):
        if isinstance(obj, type) or callable(obj):
            return ("ext", kind, obj)
        return ("inst", kind, type(obj))

    def resolve_ann(self, kind, ann: str):
        """A real class from a signature annotation (TensorRT), or None."""
        ann = ann.strip().strip("'\"")
        if kind != "trt":
            obj = getattr(self.ext["cudart"], ann, None)
            return obj if isinstance(obj, type) else None
        for prefix in TRT_PREFIXES:
            if ann.startswith(prefix):
                obj = self.ext["trt"]
                for part in ann[len(prefix):].split("."):
                    obj = getattr(obj, part, None)
                return obj if isinstance(obj, type) else None
        return None

    def returns(self, kind, ret: str):
        cls = self.resolve_ann(kind, ret)
        if cls is not None:
            return ("inst", kind, cls)
        return {"bool": ("py", bool), "int": ("py", int), "str": ("py", str)}.get(ret.strip())

    @staticmethod
    def join(a, b):
        if a is None or a == ("py", type(None)):
            return b if b is not None else a
        return a

    # -- argument checks --------------------------------------------------------
    def arg_ok(self, kind, ann: str, val) -> bool:
        if val is None or not ann:
            return True
        a = ann.strip()
        cls = self.resolve_ann(kind, a)
        if cls is not None:
            is_enum = hasattr(cls, "__members__")
            if val[0] == "inst":
                if issubclass(val[2], cls):
                    return True
                return bool(kind == "cudart" and issubclass(val[2], int) and issubclass(cls, int))
            if val[0] == "py":
                if cls.__name__ == "Dims":
                    return val[1] in (tuple, list)
                if kind == "cudart" and issubclass(cls, int):
                    return val[1] is int
                return False if is_enum or val[1] in (str, bytes, float) else True
            return True
        if val[0] == "inst":
            v = val[2]
            if a in ("str",):
                return False
            if a in ("int", "typing.SupportsInt", "bool"):
                return hasattr(v, "__index__") or hasattr(v, "__int__")
            return True
        if val[0] == "py":
            t = val[1]
            if a == "str":
                return t is str
            if a in ("int", "typing.SupportsInt"):
                return t in (int, bool)
            if a == "bool":
                return t in (bool, int)
            if a in ("buffer", "typing_extensions.Buffer", "collections.abc.Buffer"):
                return t in (bytes, bytearray, memoryview)
            if a in ("tuple",):
                return t is tuple
            if a in ("list",) or a.startswith(("collections.abc.Sequence", "list[")):
                return t in (list, tuple)
        return True

    def check_call(self, kind, label, sigs, args, kwargs, ctx, node):
        """Record ``label`` as used; a problem unless one of ``sigs`` takes the call."""
        self.uses[kind].add(label)
        if not sigs:
            self.problem(self.where(ctx, node), f"{label}: no signature found to check the call against")
            return None
        if args is None:  # *args of unknown length
            return sigs[0]
        errors = []
        for sig in sigs:
            bound, err = {}, None
            if len(args) > len(sig.params) and not sig.varargs:
                err = f"{len(args)} positional arguments, takes {len(sig.params)}"
            else:
                for (pname, ann, _), val in zip(sig.params, args):
                    bound[pname] = (ann, val)
                names = {p[0]: p for p in sig.params}
                for k, val in kwargs.items():
                    if k not in names and not sig.varkw:
                        err = f"no parameter {k!r}"
                    elif k in bound:
                        err = f"{k!r} given twice"
                    else:
                        bound[k] = (names[k][1] if k in names else "", val)
                if err is None:
                    missing = [p[0] for p in sig.params if not p[2] and p[0] not in bound]
                    if missing:
                        err = f"missing {', '.join(missing)}"
                if err is None:
                    bad = [f"{k} ({ann})" for k, (ann, val) in bound.items() if not self.arg_ok(kind, ann, val)]
                    if bad:
                        err = f"wrong type for {', '.join(bad)}"
            if err is None:
                return sig
            errors.append(f"{sig!r}: {err}")
        self.problem(self.where(ctx, node), f"{label} called wrongly: " + "; ".join(errors))
        return None

    # -- project symbols -----------------------------------------------------------
    def module_global(self, m: str, name: str):
        tree = self.modules.get(m)
        if tree is None:
            return None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return ("pyfunc", m, name)
            if isinstance(node, ast.ClassDef) and node.name == name:
                return ("pycls", m, name)
        if f"{m}.{name}" in self.modules:
            return ("pymod", f"{m}.{name}")
        env = self.import_env(m, tree.body)
        return env.get(name)

    def import_env(self, m: str, body) -> dict:
        """Names bound by the module-level imports of ``m`` (``if TYPE_CHECKING:`` and ``try:`` included)."""
        key = (m, id(body))
        if key in self._imports:
            return self._imports[key]
        env = {}

        def visit(stmts):
            for node in stmts:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    env.update(self.bind_import(m, node))
                elif isinstance(node, ast.If):
                    visit(node.body)
                    visit(node.orelse)
                elif isinstance(node, ast.Try):
                    visit(node.body)
                    for h in node.handlers:
                        visit(h.body)

        visit(body)
        self._imports[key] = env
        return env

    def bind_import(self, m: str, node) -> dict:
        out = {}
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensorrt":
                    out[a.asname or "tensorrt"] = ("mod", "trt")
                elif a.name in self.modules and a.asname:
                    out[a.asname] = ("pymod", a.name)
        else:
            base = node.module or ""
            if node.level:
                parent = m.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            for a in node.names:
                key = a.asname or a.name
                if (base, a.name) in (("cuda.bindings", "runtime"), ("cuda", "cudart")):
                    out[key] = ("mod", "cudart")
                elif base in self.modules:
                    if a.name in ("*",):
                        continue
                    out[key] = ("__lazy__", base, a.name)
        return out

    def lookup_global(self, ctx, name):
        v = ctx["globals"].get(name)
        if v is not None and v[0] == "__lazy__":
            v = self.module_global(v[1], v[2])
        if v is None:
            v = self.module_global(ctx["module"], name) if name not in ctx["globals"] else None
        return v

    def find_def(self, m: str, cls: str | None, name: str):
        tree = self.modules[m]
        body = tree.body
        if cls is not None:
            c = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
            if c is None:
                return None
            body = c.body
        return next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name), None)

    # -- interpretation ------------------------------------------------------------
    def analyze(self, m: str, cls: str | None, fn: ast.FunctionDef, args: list, kwargs: dict, self_val=None):
        key = (m, cls, fn.name, repr(args), repr(sorted(kwargs.items())), repr(self_val))
        if key in self.memo:
            return self.memo[key]
        if key in self.stack or len(self.stack) > 12:
            return None
        self.stack.add(key)
        ctx = {"module": m, "cls": cls, "globals": self.import_env(m, self.modules[m].body), "returns": []}
        env = {}
        params = fn.args.posonlyargs + fn.args.args
        vals = list(args)
        if cls is not None and params and not any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list):
            env[params[0].arg] = self_val or ("pyobj", m, cls)
            params = params[1:]
        for i, p in enumerate(params):
            v = vals[i] if i < len(vals) else kwargs.get(p.arg)
            env[p.arg] = v if v is not None else self.annotation(ctx, p.annotation)
        for p in fn.args.kwonlyargs:
            v = kwargs.get(p.arg)
            env[p.arg] = v if v is not None else self.annotation(ctx, p.annotation)
        if fn.args.vararg is not None:
            extra = vals[len(params):]
            env[fn.args.vararg.arg] = ("tuple", tuple(extra))
        self.block(fn.body, env, ctx)
        ret = None
        for r in ctx["returns"]:
            ret = self.join(ret, r)
        self.stack.discard(key)
        self.memo[key] = ret
        return ret

    def annotation(self, ctx, node):
        if node is None:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.join(self.annotation(ctx, node.left), self.annotation(ctx, node.right))
        v = self.expr(node, {}, ctx, record=False)
        if v is None:
            return None
        if v[0] == "ext" and isinstance(v[2], type):
            return ("inst", v[1], v[2])
        if v[0] == "pycls":
            return ("pyobj", v[1], v[2])
        return None

    def block(self, body, env, ctx):
        for st in body:
            self.stmt(st, env, ctx)

    def assign(self, target, val, env, ctx):
        if isinstance(target, ast.Name):
            env[target.id] = self.join(val, env.get(target.id))
        elif isinstance(target, ast.Attribute):
            owner = self.expr(target.value, env, ctx)
            if owner is not None and owner[0] == "inst":  # a store on a TensorRT object: a settable property
                cls = owner[2]
                try:
                    static = inspect.getattr_static(cls, target.attr)
                except AttributeError:
                    static = None
                if not isinstance(static, property) or static.fset is None:
                    self.problem(self.where(ctx, target), f"{cls.__name__}.{target.attr} cannot be set")
                else:
                    self.uses[owner[1]].add(f"{cls.__name__}.{target.attr}")
            if owner is not None and owner[0] == "pyobj" and val is not None:
                table = self.attrs.setdefault(owner[1:], {})
                table[target.attr] = self.join(table.get(target.attr), val)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for i, t in enumerate(target.elts):
                sub = val[1][i] if val is not None and val[0] == "tuple" and i < len(val[1]) else None
                self.assign(t, sub, env, ctx)

    def stmt(self, st, env, ctx):
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            env.update({k: (self.module_global(v[1], v[2]) if v[0] == "__lazy__" else v)
                        for k, v in self.bind_import(ctx["module"], st).items()})
        elif isinstance(st, ast.Assign):
            val = self.expr(st.value, env, ctx)
            for t in st.targets:
                self.assign(t, val, env, ctx)
        elif isinstance(st, ast.AnnAssign):
            val = self.expr(st.value, env, ctx) if st.value is not None else None
            self.assign(st.target, self.join(self.annotation(ctx, st.annotation), val), env, ctx)
        elif isinstance(st, ast.AugAssign):
            self.expr(st.value, env, ctx)
        elif isinstance(st, ast.Return):
            if st.value is not None:
                ctx["returns"].append(self.expr(st.value, env, ctx))
        elif isinstance(st, (ast.Expr, ast.Raise, ast.Assert, ast.Delete)):
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr):
                    self.expr(child, env, ctx)
        elif isinstance(st, (ast.If, ast.While)):
            self.expr(st.test, env, ctx)
            self.block(st.body, env, ctx)
            self.block(st.orelse, env, ctx)
        elif isinstance(st, ast.For):
            self.expr(st.iter, env, ctx)
            self.assign(st.target, None, env, ctx)
            self.block(st.body, env, ctx)
            self.block(st.orelse, env, ctx)
        elif isinstance(st, ast.With):
            for item in st.items:
                v = self.expr(item.context_expr, env, ctx)
                if item.optional_vars is not None:
                    entered = None
                    if v is not None and v[0] == "pyobj":
                        d = self.find_def(v[1], v[2], "__enter__")
                        entered = self.analyze(v[1], v[2], d, [], {}, v) if d else None
                    self.assign(item.optional_vars, entered, env, ctx)
            self.block(st.body, env, ctx)
        elif isinstance(st, ast.Try):
            self.block(st.body, env, ctx)
            for h in st.handlers:
                self.block(h.body, env, ctx)
            self.block(st.orelse, env, ctx)
            self.block(st.finalbody, env, ctx)

    def call_project(self, f, args, kwargs):
        if f[0] == "pyfunc":
            d = self.find_def(f[1], None, f[2])
            return self.analyze(f[1], None, d, args, kwargs) if d else None
        if f[0] == "pycls":
            d = self.find_def(f[1], f[2], "__init__")
            if d is not None:
                self.analyze(f[1], f[2], d, args, kwargs)
            return ("pyobj", f[1], f[2])
        if f[0] == "pybound":
            d = self.find_def(f[1], f[2], f[3])
            return self.analyze(f[1], f[2], d, args, kwargs, f[4]) if d else None
        if f[0] == "pyobj":  # a callable instance (a loader)
            d = self.find_def(f[1], f[2], "__call__")
            return self.analyze(f[1], f[2], d, args, kwargs, f) if d else None
        return None

    def attribute(self, owner, attr, ctx, node, record=True):
        kind = owner[1] if owner[0] in ("mod", "ext", "inst", "bound") else None
        if owner[0] == "mod":
            mod = self.ext[kind]
            if not hasattr(mod, attr):
                if record:
                    self.problem(self.where(ctx, node), f"{'tensorrt' if kind == 'trt' else 'cudart'}.{attr} does not exist")
                return None
            if record:
                self.uses[kind].add(attr)
            return self.ext_value(kind, getattr(mod, attr))
        if owner[0] == "ext" and isinstance(owner[2], type):
            cls = owner[2]
            if not hasattr(cls, attr):
                if record:
                    self.problem(self.where(ctx, node), f"{cls.__name__}.{attr} does not exist")
                return None
            if record:
                self.uses[kind].add(f"{cls.__name__}.{attr}")
            v = getattr(cls, attr)
            if isinstance(v, type):
                return ("ext", kind, v)
            if isinstance(v, cls) or hasattr(cls, "__members__"):
                return ("inst", kind, type(v))
            return None
        if owner[0] == "inst":
            cls = owner[2]
            try:
                static = inspect.getattr_static(cls, attr)
            except AttributeError:
                if record:
                    self.problem(self.where(ctx, node), f"{cls.__name__}.{attr} does not exist")
                return None
            if record:
                self.uses[kind].add(f"{cls.__name__}.{attr}")
            if isinstance(static, property):
                sigs = pybind_sigs(static.fget.__doc__, "", drop_self=True) if static.fget else []
                return self.returns(kind, sigs[0].ret) if sigs else None
            if type(static).__name__ == "instancemethod" or inspect.isfunction(static):
                return ("bound", kind, cls, attr)
            return None
        if owner[0] == "pymod":
            return self.module_global(owner[1], attr)
        if owner[0] == "pyobj":
            table = self.attrs.get(owner[1:], {})
            if attr in table:
                return table[attr]
            d = self.find_def(owner[1], owner[2], attr)
            if d is not None:
                if any(isinstance(x, ast.Name) and x.id == "property" for x in d.decorator_list):
                    return self.analyze(owner[1], owner[2], d, [], {}, owner)
                return ("pybound", owner[1], owner[2], attr, owner)
        return None

    def call(self, node, env, ctx, record=True):
        f = self.expr(node.func, env, ctx, record)
        args, unknown_len = [], False
        for a in node.args:
            if isinstance(a, ast.Starred):
                v = self.expr(a.value, env, ctx, record)
                if v is not None and v[0] == "tuple":
                    args.extend(v[1])
                else:
                    unknown_len = True
            else:
                args.append(self.expr(a, env, ctx, record))
        kwargs = {k.arg: self.expr(k.value, env, ctx, record) for k in node.keywords if k.arg}
        if isinstance(node.func, ast.Attribute):
            site = (self.where(ctx, node), node.func.col_offset, node.func.attr)
            typed = f is not None
            recv = self.expr(node.func.value, env, ctx, record=False)
            if recv is None or recv[0] == "pyobj" and f is None:
                for kind, names in self.api_names.items():
                    if node.func.attr in names:
                        self.sites[site + (kind,)] = self.sites.get(site + (kind,), False) or typed
            elif recv[0] in ("mod", "inst", "ext"):
                self.sites[site + (recv[1],)] = True
        if f is None:
            return None
        if f[0] in ("pyfunc", "pycls", "pybound", "pyobj"):
            return self.call_project(f, args, kwargs)
        if f[0] == "ext":
            kind, obj = f[1], f[2]
            if kind == "cudart":
                self.cudart_calls.add(obj.__name__)
            label = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
            if isinstance(obj, type):
                if not record:
                    return ("inst", kind, obj)
                sigs = pybind_sigs(obj.__init__.__doc__, "__init__") if type(obj.__init__).__name__ == "instancemethod" \
                    else callable_sigs(obj.__init__, "__init__", True)
                self.check_call(kind, label, sigs, None if unknown_len else args, kwargs, ctx, node)
                return ("inst", kind, obj)
            if record:
                sig = self.check_call(kind, label, callable_sigs(obj, obj.__name__, drop_self=False),
                                      None if unknown_len else args, kwargs, ctx, node)
                return self.returns(kind, sig.ret) if sig else None
            return None
        if f[0] == "bound":
            kind, cls, name = f[1:]
            meth = getattr(cls, name)
            sig = None
            if record:
                sig = self.check_call(kind, f"{cls.__name__}.{name}", callable_sigs(meth, name, drop_self=True),
                                      None if unknown_len else args, kwargs, ctx, node)
            return self.returns(kind, sig.ret) if sig else None
        if f[0] == "builtin":
            name = f[1]
            if name in ("int", "len"):
                return ("py", int)
            if name in ("str", "repr"):
                return ("py", str)
            if name in ("bytes", "tuple", "list", "bool", "float"):
                return ("py", {"bytes": bytes, "tuple": tuple, "list": list, "bool": bool, "float": float}[name])
        return None

    def expr(self, node, env, ctx, record=True):
        if node is None:
            return None
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            v = self.lookup_global(ctx, node.id)
            if v is None and node.id in ("int", "len", "str", "repr", "bytes", "tuple", "list", "bool", "float"):
                return ("builtin", node.id)
            return v
        if isinstance(node, ast.Constant):
            return ("py", type(node.value))
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                self.expr(v, env, ctx, record)
            return ("py", str)
        if isinstance(node, ast.FormattedValue):
            return self.expr(node.value, env, ctx, record)
        if isinstance(node, ast.Tuple):
            return ("tuple", tuple(self.expr(e, env, ctx, record) for e in node.elts))
        if isinstance(node, ast.List):
            for e in node.elts:
                self.expr(e, env, ctx, record)
            return ("py", list)
        if isinstance(node, ast.Attribute):
            owner = self.expr(node.value, env, ctx, record)
            return self.attribute(owner, node.attr, ctx, node, record) if owner is not None else None
        if isinstance(node, ast.Call):
            return self.call(node, env, ctx, record)
        if isinstance(node, ast.BoolOp):
            out = None
            for v in node.values:
                out = self.join(out, self.expr(v, env, ctx, record))
            return out
        if isinstance(node, ast.IfExp):
            self.expr(node.test, env, ctx, record)
            return self.join(self.expr(node.body, env, ctx, record), self.expr(node.orelse, env, ctx, record))
        if isinstance(node, ast.BinOp):
            a, b = self.expr(node.left, env, ctx, record), self.expr(node.right, env, ctx, record)
            if isinstance(node.op, (ast.LShift, ast.BitOr, ast.BitAnd)) and a == b == ("py", int):
                return ("py", int)
            return None
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = dict(env)
            for g in node.generators:
                self.expr(g.iter, inner, ctx, record)
                self.assign(g.target, None, inner, ctx)
                for cond in g.ifs:
                    self.expr(cond, inner, ctx, record)
            for part in ("elt", "key", "value"):
                if hasattr(node, part):
                    self.expr(getattr(node, part), inner, ctx, record)
            return None
        if isinstance(node, ast.Lambda):
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child, env, ctx, record)
        return None

    def run(self) -> None:
        for _ in range(3):  # self-attribute tables settle in a few passes
            self.memo.clear()
            for m, tree in self.modules.items():
                for node in tree.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.analyze(m, None, node, [], {})
                    elif isinstance(node, ast.ClassDef):
                        for sub in node.body:
                            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                                self.analyze(m, node.name, sub, [], {})
        # Only modules that use tensorrt / cuda-python at all can call them.
        users = {w.split(":")[0] for (w, _c, _a, _k), typed in self.sites.items() if typed}
        for (where, _col, attr, kind), typed in sorted(self.sites.items()):
            if not typed and where.split(":")[0] in users:
                self.problem(where, f".{attr}(...) looks like a {kind} call but its receiver's type was not inferred")


# ----------------------------------------------------------------------------- stand-ins
def check_fake_module(fake, real, names) -> list[str]:
    """What a fake module has that the real one lacks (classes, methods, parameters, enum values)."""
    problems = []
    for name in names:
        fv = getattr(fake, name, None)
        if fv is None:
            problems.append(f"fake lacks {name} (listed in CHECKED)")
            continue
        if not hasattr(real, name):
            problems.append(f"{name} does not exist in the real module")
            continue
        problems += check_fake_object(name, fv, getattr(real, name))
    return problems


def check_fake_object(label, fv, rv) -> list[str]:
    problems = []
    members = getattr(fv, "__members__", None)
    if members is not None:  # an enum
        for k, v in members.items():
            if not hasattr(rv, k):
                problems.append(f"{label}.{k} does not exist in the real enum")
            elif int(getattr(rv, k)) != int(v):
                problems.append(f"{label}.{k} is {int(v)} in the fake, {int(getattr(rv, k))} in the real enum")
        return problems
    if isinstance(fv, type):
        for k, v in vars(fv).items():
            if k.startswith("_") and k != "__init__":
                continue
            if k == "__init__" and type(rv.__init__).__name__ != "instancemethod":
                continue  # not constructible in the real API: the fake's constructor serves its own factories
            if not hasattr(rv, k):
                problems.append(f"{label}.{k} does not exist in the real class")
                continue
            real_attr = inspect.getattr_static(rv, k)
            if isinstance(v, type):
                problems += check_fake_object(f"{label}.{k}", v, getattr(rv, k))
            elif inspect.isfunction(v):
                if isinstance(real_attr, property):
                    problems.append(f"{label}.{k} is a method in the fake, a property in the real class")
                    continue
                fake_names = [p for p in inspect.signature(v).parameters][1:]
                sigs = callable_sigs(getattr(rv, k), k, drop_self=True)
                if not any([p[0] for p in s.params][:len(fake_names)] == fake_names
                           and all(p[2] for p in s.params[len(fake_names):]) for s in sigs):
                    problems.append(f"{label}.{k}({', '.join(fake_names)}) matches no real signature: {sigs}")
            elif isinstance(v, property):
                if not isinstance(real_attr, property):
                    problems.append(f"{label}.{k} is a property in the fake, not in the real class")
            elif isinstance(real_attr, property) or type(real_attr).__name__ == "instancemethod":
                if type(real_attr).__name__ == "instancemethod":
                    problems.append(f"{label}.{k} is a value in the fake, a method in the real class")
        return problems
    if callable(fv):
        fake_names = list(inspect.signature(fv).parameters)
        real_sigs = callable_sigs(rv, getattr(rv, "__name__", label), drop_self=False)
        if not any([p[0] for p in s.params] == fake_names for s in real_sigs):
            problems.append(f"{label}({', '.join(fake_names)}) matches no real signature: {real_sigs}")
    return problems


# ----------------------------------------------------------------------------- cudart, run
class CheckedCudart:
    """Each function calls the real cuda-python first (its argument checks; error 35 here), then the fake."""

    def __init__(self, real, fake):
        self._real, self._fake = real, fake
        self.calls: dict[str, list[str]] = {}
        self.cudaError_t = real.cudaError_t
        self.cudaMemcpyKind = real.cudaMemcpyKind

    def __getattr__(self, name):
        real_fn = getattr(self._real, name)
        fake_fn = getattr(self._fake, name, None)

        def call(*args):
            result = real_fn(*args)
            err = result[0] if isinstance(result, tuple) else result
            self.calls.setdefault(name, []).append(getattr(err, "name", str(err)))
            if fake_fn is None:
                return result
            out = fake_fn(*[int(a) if isinstance(a, self._real.cudaStream_t) else a for a in args])
            if name == "cudaStreamCreate":  # the real type, as the project gets it on a GPU
                return out[0], self._real.cudaStream_t(init_value=int(out[1]))
            return out

        return call


def preprocess_flow(d: pathlib.Path) -> dict:
    """The preprocessing runner on fake engines of both variants (S = 16, frames 8..48 a side).

    Returns ``{"HxW": {"vertical_first", "shape", "max_units"}, "cached_sizes", "uploads"}``:
    ``max_units`` is the largest deviation from the NumPy reference
    (:func:`sam2trt.tracker.processing.preprocess_frame_matmul`) in 0..255 units;
    ``uploads`` counts the weight uploads (two per new frame size).
    """
    from sam2trt.engine.compat import FrameSizeProfile
    from sam2trt.preprocess_graph import write_preprocess_model
    from sam2trt.runtime import cuda_memory, tensorrt_backend
    from sam2trt.tracker.processing import frame_resize_weights, preprocess_frame_matmul
    from tests.fakes.tensorrt import fake_engine_bytes

    s, mean, std = 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = FrameSizeProfile((8, 20, 48), (8, 30, 48))
    memory = cuda_memory.CudaMemory()
    variants = {}
    for vf in (False, True):
        onnx_path = write_preprocess_model(d / f"pre{int(vf)}.onnx", s, mean, std, vertical_first=vf)
        path = d / f"pre{int(vf)}.engine"
        path.write_bytes(fake_engine_bytes(onnx_path, frames.input_shapes(s), tf32=False))
        variants[vf] = tensorrt_backend.TensorRTRunner(tensorrt_backend.EngineFromPath(path), f"pre{int(vf)}", memory)
    rng = np.random.default_rng(0)
    out: dict = {"uploads": 0}
    real_upload = memory.upload

    def counting_upload(*args, **kwargs):
        out["uploads"] += 1
        return real_upload(*args, **kwargs)

    memory.upload = counting_upload
    with tensorrt_backend.TensorRTPreprocess(variants, s, frames) as pre:
        for h, w in ((20, 30), (40, 12), (20, 30)):  # landscape (horizontal first), portrait (vertical first)
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            image = pre.infer({"frame": rgb}, keep=("image",))["image"]
            ref = preprocess_frame_matmul(rgb, *frame_resize_weights(h, w, s), mean, std)
            units = np.abs(np.asarray(image) - ref) * (np.asarray(std, np.float32)[:, None, None] * 255)
            out[f"{h}x{w}"] = {"vertical_first": pre.variant(h, w), "shape": list(image.shape),
                               "max_units": float(units.max())}
        out["cached_sizes"] = len(pre._weights)
    return out


def run_cudart_flows(real_rt) -> dict:
    """Run the TensorRT runner (fake engine) and machine detection on :class:`CheckedCudart`."""
    import tempfile

    from sam2trt import platform
    from sam2trt.errors import RuntimeFailure
    from sam2trt.runtime import cuda_memory, tensorrt_backend
    from tests.fakes.cuda import FakeCudart
    from tests.fakes.tensorrt import make_fake_trt

    checked = CheckedCudart(real_rt, FakeCudart())
    out: dict = {"errors": []}
    real_import = platform.import_cudart
    platform.import_cudart = lambda: checked
    saved_trt = sys.modules.get("tensorrt")
    sys.modules["tensorrt"] = make_fake_trt(real_trt_version())
    try:
        with tempfile.TemporaryDirectory() as d:
            path = pathlib.Path(d) / "x.engine"
            path.write_bytes(b"serialized")
            memory = cuda_memory.CudaMemory()
            loader = tensorrt_backend.EngineFromPath(path)
            with tensorrt_backend.TensorRTRunner(loader, "a", memory) as a, \
                    tensorrt_backend.TensorRTRunner(loader, "b", memory) as b:
                x = np.arange(6, dtype=np.float32).reshape(2, 3)
                t = a.infer({"x": x}, keep=("y",))["y"]
                y = b.infer({"x": [t[1], t[0]]})["y"]
                np.testing.assert_array_equal(y, 2 * (2 * x[[1, 0]] + 1) + 1)
                np.testing.assert_array_equal(np.asarray(t), 2 * x + 1)
                t.release()
            out["preprocess"] = preprocess_flow(pathlib.Path(d))
        # The error path, on the real module alone: one line naming CUDA's error.
        alone = CheckedCudart(real_rt, None)
        try:
            cuda_memory.CudaMemory().acquire(alone)
        except RuntimeFailure as e:
            out["real_stream_error"] = str(e)
        for name, errs in alone.calls.items():
            checked.calls.setdefault(name, []).extend(errs)
    except Exception:
        out["errors"].append(traceback.format_exc())
    finally:
        platform.import_cudart = real_import
        if saved_trt is not None:
            sys.modules["tensorrt"] = saved_trt
    env = platform.detect()  # the real module: versions read, no device
    out["detect"] = {"cuda_runtime_version": env.cuda_runtime_version, "gpus": len(env.gpus),
                     "gpu_source": env.gpu_source}
    # Detection again, told by the fake that one device exists, so that it asks the real
    # module for that device's properties (and skips it on the error).
    one_device = types.SimpleNamespace(cudaGetDeviceCount=lambda: (0, 1))
    detecting = CheckedCudart(real_rt, one_device)
    platform.import_cudart = lambda: detecting
    try:
        out["detect_one_device_gpus"] = len(platform.detect().gpus)
    finally:
        platform.import_cudart = real_import
    for name, errs in detecting.calls.items():
        checked.calls.setdefault(name, []).extend(errs)
    out["calls"] = checked.calls
    return out


def real_trt_version() -> str:
    import tensorrt

    return tensorrt.__version__


# ----------------------------------------------------------------------------- self-check
#: Mistakes the checks must find (each line marked with what is expected).
BROKEN_SOURCE = """
import tensorrt as trt
from cuda.bindings import runtime as rt


def build(path, data: bytes):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(1 << 30)  # EXPECT missing pool_size
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, "4G")  # EXPECT wrong type
    config.set_memory_pool_limit(1, 1 << 30)  # EXPECT int for an enum
    network = builder.create_network(0)
    parser = trt.OnnxParser(network)  # EXPECT missing logger
    parser.parse_from_file(path, verbose=True)  # EXPECT no parameter 'verbose'
    network.mark_everything()  # EXPECT does not exist
    network.num_inputs = 3  # EXPECT cannot be set
    trt.NoSuchThing  # EXPECT does not exist
    trt.TensorIOMode.SIDEWAYS  # EXPECT does not exist
    engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    engine.get_tensor_name("x")  # EXPECT wrong type
    unknown_engine().create_execution_context()  # EXPECT not inferred
    rt.cudaMemcpyAsync(1, 2, 3)  # EXPECT missing kind, stream
    rt.cudaNoSuchCall()  # EXPECT does not exist
"""


def self_check(trt, cudart) -> dict:
    """Run the source walk on :data:`BROKEN_SOURCE` and the fake check on a broken stand-in."""
    w = Walker(trt, cudart, {"broken": BROKEN_SOURCE})
    w.run()
    expected = {i + 1: line.split("# EXPECT ")[1] for i, line in enumerate(BROKEN_SOURCE.splitlines())
                if "# EXPECT " in line}
    found = {}
    for p in w.problems:
        line = int(p.split(":")[1])
        found.setdefault(line, []).append(p)
    missed = [f"line {n}: {what}" for n, what in expected.items() if n not in found]
    unexpected = [p for n, ps in found.items() if n not in expected for p in ps]

    class Builder:  # a stand-in with a method and a parameter the real Builder lacks
        def create_network(self, flags=0, explicit_batch=True):
            pass

        def build_engine(self, network, config):
            pass

    fake_problems = check_fake_object("Builder", Builder, trt.Builder)
    return {"missed": missed, "unexpected": unexpected, "problems": sorted(w.problems),
            "fake_problems": fake_problems}


# ----------------------------------------------------------------------------- main
def main() -> int:
    import tensorrt_bindings

    sys.modules["tensorrt"] = tensorrt_bindings
    trt = tensorrt_bindings
    from cuda.bindings import runtime as cudart

    import cuda.bindings

    from sam2trt.engine import build
    from sam2trt.errors import RuntimeFailure
    from sam2trt.runtime import tensorrt_backend
    from tests.fakes import cuda as fake_cuda
    from tests.fakes import tensorrt as fake_trt

    report: dict = {"tensorrt_version": trt.__version__, "cuda_bindings_version": cuda.bindings.__version__}
    # 4. failures without the library
    logger = trt.Logger(trt.Logger.WARNING)
    report["logger"] = type(logger).__name__
    factories = {}
    for name, args in (("Builder", (logger,)), ("Runtime", (logger,))):
        try:
            getattr(trt, name)(*args)
            factories[name] = "created"
        except TypeError as e:
            factories[name] = str(e)
    report["factories"] = factories
    try:
        build.create_trt_object(trt.Builder, logger, what="builder")
    except RuntimeFailure as e:
        report["project_builder_error"] = str(e)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "m.engine"
        path.write_bytes(b"x")
        try:
            tensorrt_backend.EngineFromPath(path)()
        except RuntimeFailure as e:
            report["project_runtime_error"] = str(e)
    # 3. precision path
    report["has_fp16_flag"] = hasattr(trt.BuilderFlag, "FP16")
    report["has_strongly_typed"] = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    report["tf32_flag"] = int(trt.BuilderFlag.TF32) if hasattr(trt.BuilderFlag, "TF32") else None
    report["has_clear_flag"] = hasattr(trt.IBuilderConfig, "clear_flag")
    report["strongly_typed_bit"] = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    report["network_flags"] = build.network_flags(trt)
    # 1. uses in the source
    walker = Walker(trt, cudart)
    walker.run()
    report["trt_uses"] = sorted(walker.uses["trt"])
    report["cudart_uses"] = sorted(walker.uses["cudart"])
    report["cudart_calls_in_source"] = sorted(walker.cudart_calls)
    report["source_problems"] = sorted(walker.problems)
    # 2. stand-ins
    report["fake_trt_problems"] = check_fake_module(fake_trt.make_fake_trt(trt.__version__), trt, fake_trt.CHECKED)
    report["fake_cudart_problems"] = check_fake_module(fake_cuda.FakeCudart(), cudart, fake_cuda.CHECKED)
    # 5. cudart calls, run
    report["cudart_run"] = run_cudart_flows(cudart)
    report["self_check"] = self_check(trt, cudart)
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
