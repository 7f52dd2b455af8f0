"""Small builders for Grafana dashboard JSON (schemaVersion 39, Grafana 10.x and 11.x).

Only what kafka-medic's dashboards use. Every panel queries the `datasource` template variable,
so a dashboard imports into any Grafana with any Prometheus data source name.
"""

DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39


class Layout:
    """Hands out panel ids and grid positions, row by row (24 columns wide)."""

    def __init__(self):
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def new_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def new_row(self):
        if self.x > 0:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0
        pos = {"h": 1, "w": 24, "x": 0, "y": self.y}
        self.y += 1
        return pos


def target(expr, legend="", ref="A", instant=False, table=False, interval=""):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    if interval:
        t["interval"] = interval
    return t


def targets(*specs, **common):
    """targets((expr, legend), (expr, legend), ...) with refIds A, B, C..."""
    out = []
    for i, spec in enumerate(specs):
        expr, legend = spec if isinstance(spec, tuple) else (spec, "")
        out.append(target(expr, legend, ref=chr(ord("A") + i), **common))
    return out


def thresholds(*steps, base="green"):
    """thresholds((0.8, "orange"), (0.9, "red")): the colour above each value."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": c, "value": v} for v, c in steps],
    }


def dashed(regex, color="red"):
    """An override that draws the series whose name matches `regex` as a dashed line."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}},
        ],
    }


def timeseries(layout, title, tgts, unit="short", w=12, h=8, description="",
               threshold_steps=None, threshold_style="off", overrides=None, min_=0, max_=None,
               stack=False, bars=False, legend_calcs=("lastNotNull", "max"), decimals=None):
    defaults = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else 10,
            "gradientMode": "none",
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "axisSoftMin": 0,
            "thresholdsStyle": {"mode": threshold_style},
        },
        "thresholds": threshold_steps or thresholds(),
        "color": {"mode": "palette-classic"},
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "id": layout.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                       "calcs": list(legend_calcs)},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }


def stat(layout, title, tgts, unit="short", w=4, h=4, description="", threshold_steps=None,
         mappings=None, color_mode="value", graph=True, decimals=None):
    defaults = {
        "unit": unit,
        "thresholds": threshold_steps or thresholds(),
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "id": layout.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode,
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": tgts,
    }


def state_timeline(layout, title, tgts, mappings, w=24, h=8, description="", threshold_steps=None):
    return {
        "type": "state-timeline",
        "id": layout.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": threshold_steps or thresholds(),
                "mappings": mappings,
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "mergeValues": True,
            "showValue": "never",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": tgts,
    }


def table(layout, title, tgts, rename, w=24, h=8, description="", units=None, links=None,
          sort_by=None, hidden=("Time",)):
    """A table of instant queries merged on their labels; `rename` maps 'Value #A' etc."""
    overrides = []
    for col, unit in (units or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": col},
                          "properties": [{"id": "unit", "value": unit}]})
    for col, link in (links or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": col},
                          "properties": [{"id": "links", "value": [link]}]})
    options = {"showHeader": True, "cellHeight": "sm",
               "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return {
        "type": "table",
        "id": layout.new_id(),
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": layout.place(w, h),
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "filterable": True}},
                        "overrides": overrides},
        "options": options,
        "targets": tgts,
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {h: True for h in hidden},
                "renameByName": rename,
            }},
        ],
    }


def row(layout, title, collapsed=False, panels=None):
    r = {
        "type": "row",
        "id": layout.new_id(),
        "title": title,
        "collapsed": collapsed,
        "gridPos": layout.new_row(),
        "panels": panels or [],
    }
    return r


def datasource_var():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_var(name, label, query, multi=False, include_all=False, description=""):
    v = {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }
    if include_all:
        v["allValue"] = ".*"
    return v


def prom_annotation(name, expr, title, tags, color, text="", step="1m", enable=True):
    return {
        "name": name,
        "datasource": DS,
        "enable": enable,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": step,
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": tags,
        "useValueForTime": False,
    }


def builtin_annotation():
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(uid, title, description, panels, variables, annotations, time_from="now-6h"):
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {"list": [builtin_annotation()] + annotations},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {"title": "kafka-medic", "type": "dashboards", "tags": ["kafka-medic"],
             "asDropdown": True, "includeVars": True, "keepTime": True, "icon": "external link",
             "targetBlank": False, "tooltip": "", "url": ""},
        ] + [
            # The history views of the Kaftain seed, one click each; variables are kept.
            {"title": f"Last {r}", "type": "link", "url": f"/d/{uid}?from=now-{r}&to=now",
             "includeVars": True, "keepTime": False, "asDropdown": False, "icon": "dashboard",
             "targetBlank": False, "tooltip": f"Show the last {r}", "tags": []}
            for r in ("1h", "6h", "24h")
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["kafka-medic", "kafka"],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {
            "refresh_intervals": ["10s", "30s", "1m", "5m", "15m"],
            "time_options": ["1h", "6h", "24h", "2d", "7d"],
        },
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
