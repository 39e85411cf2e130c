package app_test

import (
	"fmt"

	"github.com/edgekit/edgekit/edge/app"
)

// A deployment document as a gateway receives it: read, checked, and an
// app's configuration resolved from the version's default and this
// gateway's overrides.
func ExampleParseDeployment() {
	d, err := app.ParseDeployment([]byte(`{
	  "schema": 1, "id": "rollout-1", "revision": 3,
	  "apps": [{
	    "app": {"name": "alarm", "kind": "function"},
	    "version": {
	      "version": "2.0.1",
	      "function": {"package": {"url": "https://packages.example.com/alarm-2.0.1.tar.gz",
	        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
	      "config": {"threshold": 85, "unit": "C"}
	    },
	    "config": {"overrides": {"threshold": 90}}
	  }]
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := d.Apps[0].Resolve()
	fmt.Println(d.ID, d.Revision, d.Names(), string(cfg))

	_, err = app.ParseDeployment([]byte(`{"schema": 1, "id": "rollout-2", "revision": 4,
	  "apps": [{"app": {"name": "alarm", "kind": "lambda"}, "version": {"version": "1"}}]}`))
	fmt.Println(err)
	// Output:
	// rollout-1 3 [alarm] {"threshold":90,"unit":"C"}
	// invalid deployment: apps[0] (alarm).app.kind: "lambda": want function or container
}
