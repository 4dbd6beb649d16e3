package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type message = map[string]interface{}

// serve runs the plugin on pipes and returns a function making one call.
func serve(t *testing.T) func(method string, params interface{}) message {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() {
		_ = newPlugin().Serve(inR, outW)
		outW.Close()
	}()
	t.Cleanup(func() { inW.Close() })
	lines := bufio.NewScanner(outR)
	lines.Buffer(make([]byte, 1<<20), 16<<20)
	id := 0
	return func(method string, params interface{}) message {
		t.Helper()
		id++
		line, _ := json.Marshal(message{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
		if _, err := inW.Write(append(line, '\n')); err != nil {
			t.Fatal(err)
		}
		for {
			got := make(chan bool, 1)
			go func() { got <- lines.Scan() }()
			select {
			case ok := <-got:
				if !ok {
					t.Fatal("the plugin closed stdout")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("timed out")
			}
			var m message
			if err := json.Unmarshal(lines.Bytes(), &m); err != nil {
				t.Fatalf("not JSON on stdout: %q", lines.Text())
			}
			if _, isResponse := m["id"]; isResponse {
				if m["id"].(float64) != float64(id) {
					t.Fatalf("answer to the wrong id: %v", m)
				}
				return m
			}
		}
	}
}

func initialize(t *testing.T, call func(string, interface{}) message, root string, config message) {
	t.Helper()
	r := call("initialize", message{
		"protocol_versions": []int{1}, "taskrush_version": "0.3.0", "name": "git-hook",
		"config": config, "project_root": root, "permissions": []message{{"kind": "process", "commands": []string{"git", "sh"}}},
	})
	result, ok := r["result"].(map[string]interface{})
	if !ok {
		t.Fatalf("initialize failed: %v", r)
	}
	hooks, _ := json.Marshal(result["hooks"])
	if string(hooks) != `["before_task"]` {
		t.Fatalf("hooks: %s", hooks)
	}
}

func beforeTask(call func(string, interface{}) message, root, task string, config message) message {
	return call("before_task", message{"context": message{
		"task_name": task, "command": "make", "working_dir": root, "env_vars": message{}, "config": config, "run_id": 1,
	}})
}

// veto returns the veto message, failing unless r is a veto.
func veto(t *testing.T, r message) string {
	t.Helper()
	e, ok := r["error"].(map[string]interface{})
	if !ok || e["code"].(float64) != -32010 {
		t.Fatalf("expected a veto, got %v", r)
	}
	return e["message"].(string)
}

func TestChecksForTheTaskRunInTheProjectRootAndPass(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	config := message{"commands": message{"build": []string{"test -f marker", "true"}}}
	call := serve(t)
	initialize(t, call, root, config)
	if r := beforeTask(call, root, "build", config); r["result"] != nil || r["error"] != nil {
		t.Fatalf("got %v", r)
	}
}

func TestAFailingCheckVetoesWithItsOutput(t *testing.T) {
	root := t.TempDir()
	config := message{"commands": message{"deploy": []string{"true", "echo 'working tree is dirty' >&2; exit 3", "touch never"}}}
	call := serve(t)
	initialize(t, call, root, config)
	msg := veto(t, beforeTask(call, root, "deploy", config))
	want := "`echo 'working tree is dirty' >&2; exit 3` failed (exit code 3):\nworking tree is dirty"
	if msg != want {
		t.Fatalf("message:\n got %q\nwant %q", msg, want)
	}
	if _, err := os.Stat(filepath.Join(root, "never")); err == nil {
		t.Fatal("a check after the failing one ran")
	}
	// Other tasks have no checks.
	if r := beforeTask(call, root, "build", config); r["result"] != nil || r["error"] != nil {
		t.Fatalf("got %v", r)
	}
}

func TestPerTaskRunChecks(t *testing.T) {
	root := t.TempDir()
	call := serve(t)
	initialize(t, call, root, message{})
	msg := veto(t, beforeTask(call, root, "test", message{"run": []string{"test -f missing"}}))
	if !strings.HasPrefix(msg, "`test -f missing` failed (exit code 1)") {
		t.Fatalf("message: %q", msg)
	}
	if r := beforeTask(call, root, "test", message{"run": "true"}); r["result"] != nil || r["error"] != nil {
		t.Fatalf("got %v", r)
	}
}

func TestGitDiffQuietVetoesADirtyTree(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "f")
	git("commit", "-q", "-m", "init")
	config := message{"commands": message{"release": []string{"git diff --quiet"}}}
	call := serve(t)
	initialize(t, call, root, config)
	if r := beforeTask(call, root, "release", config); r["error"] != nil {
		t.Fatalf("a clean tree was vetoed: %v", r)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := veto(t, beforeTask(call, root, "release", config)); msg != "`git diff --quiet` failed (exit code 1)" {
		t.Fatalf("message: %q", msg)
	}
}
