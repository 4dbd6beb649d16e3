package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

type message = map[string]interface{}

// serve sends calls (method, params) to the plugin; its answers by id.
func serve(t *testing.T, calls ...[2]interface{}) map[float64]message {
	t.Helper()
	var in strings.Builder
	for i, c := range calls {
		line, _ := json.Marshal(message{"jsonrpc": "2.0", "id": i + 1, "method": c[0], "params": c[1]})
		in.Write(append(line, '\n'))
	}
	var out strings.Builder
	if err := newPlugin().Serve(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	answers := map[float64]message{}
	lines := bufio.NewScanner(strings.NewReader(out.String()))
	for lines.Scan() {
		var m message
		if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
			t.Fatalf("not JSON on stdout: %q", lines.Text())
		}
		if id, ok := m["id"].(float64); ok {
			answers[id] = m
		}
	}
	return answers
}

func context(task string, config message) message {
	return message{"task_name": task, "command": "true", "working_dir": ".", "env_vars": message{}, "config": config, "run_id": 1}
}

var initialize = [2]interface{}{"initialize", message{"protocol_versions": []int{1}, "taskrush_version": "0.3.0", "name": "@NAME@", "config": message{}, "project_root": ".", "permissions": []interface{}{}}}

func TestABlockedTaskIsVetoed(t *testing.T) {
	got := serve(t, initialize, [2]interface{}{"before_task", message{"context": context("deploy", message{"block": []string{"deploy"}})}})
	e, _ := got[2]["error"].(message)
	if msg, _ := e["message"].(string); !strings.Contains(msg, "blocked by @NAME@") {
		t.Fatalf("no veto: %v", got[2])
	}
}

func TestTheCommandSaysHello(t *testing.T) {
	got := serve(t, initialize, [2]interface{}{"command", message{"name": "@NAME@", "args": []string{"there"}, "cwd": "."}})
	r, _ := got[2]["result"].(message)
	if r["stdout"] != "hello from @NAME@ there\n" {
		t.Fatalf("unexpected answer: %v", got[2])
	}
}
