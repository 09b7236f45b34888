// Command dashboard-check validates Grafana dashboards (JSON, as exported or provisioned) against
// the dashboard schema of the Grafana Foundation SDK (Apache-2.0): strict decoding (a field the
// schema does not have is an error, a required one missing too), the schema's own constraints,
// and each panel's options, field config and queries decoded strictly by its plugin's schema.
// A panel type or datasource it has no schema for is refused, so nothing goes unchecked.
//
//	go run . DASHBOARD.json [...]
//
// Run by `make dashboards-check` (.ci/dashboards-check.sh), in CI.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The panel plugins and datasources smsgw's dashboards may use; add one here to use it.
var panelTypes = map[string]bool{"timeseries": true, "stat": true}
var datasourceTypes = map[string]bool{"prometheus": true}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-check DASHBOARD.json [...]")
		os.Exit(2)
	}
	runtime := cog.NewRuntime()
	runtime.RegisterPanelcfgVariant(timeseries.VariantConfig())
	runtime.RegisterPanelcfgVariant(stat.VariantConfig())
	runtime.RegisterDataqueryVariant(prometheus.VariantConfig())

	failed := false
	for _, path := range os.Args[1:] {
		problems := check(path)
		for _, problem := range problems {
			fmt.Printf("%s: %s\n", path, problem)
		}
		if len(problems) > 0 {
			failed = true
		} else {
			fmt.Printf("%s: valid\n", path)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) []string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	var board dashboard.Dashboard
	if err := failed(board.UnmarshalJSONStrict(raw)); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	} else if err := failed(board.Validate()); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	// What strict decoding cannot see: types it would take as opaque.
	var loose struct {
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource *struct {
				Type string `json:"type"`
			} `json:"datasource"`
			Targets []struct {
				Datasource *struct {
					Type string `json:"type"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &loose); err != nil {
		return append(problems, err.Error())
	}
	for _, panel := range loose.Panels {
		if !panelTypes[panel.Type] {
			problems = append(problems, fmt.Sprintf("panel %q: type %q has no schema here (one of %v)", panel.Title, panel.Type, keys(panelTypes)))
		}
		if panel.Datasource == nil || !datasourceTypes[panel.Datasource.Type] {
			problems = append(problems, fmt.Sprintf("panel %q: its datasource must be one of %v", panel.Title, keys(datasourceTypes)))
		}
		if len(panel.Targets) == 0 {
			problems = append(problems, fmt.Sprintf("panel %q: no queries", panel.Title))
		}
		for _, target := range panel.Targets {
			if target.Datasource == nil || !datasourceTypes[target.Datasource.Type] {
				problems = append(problems, fmt.Sprintf("panel %q: each query's datasource must be one of %v", panel.Title, keys(datasourceTypes)))
			}
		}
	}
	return problems
}

// failed is err unless it is an empty list of build errors: the SDK's strict decoding returns
// its (typed) error list even when that list is empty.
func failed(err error) error {
	var built cog.BuildErrors
	if errors.As(err, &built) && len(built) == 0 {
		return nil
	}
	return err
}

func keys(set map[string]bool) []string {
	var names []string
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
