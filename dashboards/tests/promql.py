"""A small PromQL scanner: finds the metric selectors of an expression (name and matchers).

It does not evaluate or fully parse PromQL (promtool does the parsing); it only needs to tell
metric names apart from functions, keywords, label names, durations and strings, which the
token stream makes unambiguous:
- an identifier followed by `(` is a function or an aggregation;
- `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` are followed by a label list;
- `{...}` holds matchers, `[...]` a range or subquery, `offset`/`@` a duration or time.
Grafana variables ($name, ${name}, ${name:format}) are single tokens, so expressions can be
scanned before the variables are replaced.
"""
import re

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATOR_KEYWORDS = {"and", "or", "unless", "bool", "atan2"}
LITERALS = {"inf", "nan", "Inf", "NaN"}

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:[smhdwy]|ms)?(?:[0-9]+(?:[smhdwy]|ms))*)
  | (?P<var>\$(?:\{\w+(?::\w+)?\}|\w+))
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
""", re.VERBOSE)


class PromQLScanError(ValueError):
    pass


def tokens(expr):
    pos = 0
    out = []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise PromQLScanError(f"cannot scan {expr[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _unquote(s):
    if s[0] == "`":
        return s[1:-1]
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _skip_group(toks, i, open_, close):
    """toks[i] is `open_`; return the index after its matching `close`."""
    depth = 0
    while i < len(toks):
        if toks[i][1] == open_:
            depth += 1
        elif toks[i][1] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLScanError(f"unbalanced {open_}")


def _matchers(toks, i):
    """toks[i] is `{`; return (list of (label, op, value), index after `}`)."""
    end = _skip_group(toks, i, "{", "}")
    inner = toks[i + 1:end - 1]
    out = []
    j = 0
    while j < len(inner):
        if inner[j][1] == ",":
            j += 1
            continue
        if j + 2 >= len(inner) or inner[j][0] not in ("ident", "string") or inner[j + 2][0] != "string":
            raise PromQLScanError("malformed label matchers: " + " ".join(t[1] for t in inner))
        label = inner[j][1] if inner[j][0] == "ident" else _unquote(inner[j][1])
        out.append((label, inner[j + 1][1], _unquote(inner[j + 2][1])))
        j += 3
    return out, end


def selectors(expr):
    """Every vector selector in `expr`: a list of (metric name or None, [(label, op, value)])."""
    toks = tokens(expr)
    out = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident":
            if text in LABEL_LIST_KEYWORDS:
                i += 1
                if i < len(toks) and toks[i][1] == "(":
                    i = _skip_group(toks, i, "(", ")")
                continue
            if text in AGGREGATIONS or text in OPERATOR_KEYWORDS or text in LITERALS:
                i += 1
                continue
            if text == "offset":
                i += 2
                continue
            if nxt == "(":
                i += 1  # a function call; its arguments are scanned as they come
                continue
            if nxt == "{":
                m, i = _matchers(toks, i + 1)
                out.append((text, m))
                continue
            out.append((text, []))
            i += 1
            continue
        if text == "{":
            m, i = _matchers(toks, i)
            name = next((v for label, op, v in m if label == "__name__" and op == "="), None)
            out.append((name, m))
            continue
        if text == "[":
            i = _skip_group(toks, i, "[", "]")
            continue
        if text == "@":
            i += 2
            continue
        i += 1
    return out
