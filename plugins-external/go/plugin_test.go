package plugin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// fixture is the plugin the tests drive, in-process through pipes and as a
// real subprocess (this test binary re-run with TASKRUSH_SDK_FIXTURE=1).
func fixture() *Plugin {
	p := New("fixture", "0.1.0")
	p.OnInitialize(func(params InitializeParams) error {
		if params.Config.Bool("fail_init", false) {
			return errors.New("bad config: fail_init is set")
		}
		return nil
	})
	p.BeforeTask(func(ctx TaskContext) error {
		time.Sleep(time.Duration(ctx.Config.Float("sleep", 0) * float64(time.Second)))
		if ctx.Config.Bool("veto", false) {
			return Vetof("task `%s` is not allowed", ctx.TaskName)
		}
		switch ctx.TaskName {
		case "boom":
			return errors.New("boom")
		case "panic":
			panic("oh no")
		}
		p.Logf("info", "before %s in %s", ctx.TaskName, ctx.WorkingDir)
		return nil
	})
	p.AfterTask(func(ctx TaskContext, result TaskResult) error {
		time.Sleep(time.Duration(ctx.Config.Float("sleep", 0) * float64(time.Second)))
		p.Progress("reporting", ctx.TaskName, 50)
		code := "none"
		if result.ExitCode != nil {
			code = fmt.Sprint(*result.ExitCode)
		}
		p.Logf("debug", "after %s: %s %s cached=%v", ctx.TaskName, result.Status, code, result.Cached)
		return nil
	})
	p.Command("echo", "Print the arguments", func(args []string, cwd string) (CommandResult, error) {
		return CommandResult{Stdout: strings.Join(args, " ") + "\n"}, nil
	})
	p.Command("fail", "Exit 3", func(args []string, cwd string) (CommandResult, error) {
		return CommandResult{ExitCode: 3, Stderr: "failed in " + cwd + "\n"}, nil
	})
	p.Command("noisy", "Write to stdout by mistake", func(args []string, cwd string) (CommandResult, error) {
		fmt.Println("stray println")
		cmd := exec.Command("echo", "stray child")
		cmd.Stdout = os.Stdout
		return CommandResult{}, cmd.Run()
	})
	return p
}

func TestMain(m *testing.M) {
	if os.Getenv("TASKRUSH_SDK_FIXTURE") == "1" {
		if err := fixture().Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type message = map[string]interface{}

// host is the host side of a plugin: JSON lines in, JSON lines out.
type host struct {
	t     *testing.T
	in    io.WriteCloser
	lines chan message
	done  chan error // Serve's result, or the subprocess's exit
}

func startHost(t *testing.T, in io.WriteCloser, out io.Reader) *host {
	h := &host{t: t, in: in, lines: make(chan message, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), MaxLineBytes+1)
		for sc.Scan() {
			var m message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = message{"not json": sc.Text()}
			}
			h.lines <- m
		}
		close(h.lines)
	}()
	return h
}

// inProcess serves the fixture through pipes in this process.
func inProcess(t *testing.T, p *Plugin) *host {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	h := startHost(t, inW, outR)
	go func() {
		err := p.Serve(inR, outW)
		outW.Close()
		h.done <- err
	}()
	t.Cleanup(func() { inW.Close() })
	return h
}

// subprocess runs the fixture as a real process.
func subprocess(t *testing.T) (*host, *bytes.Buffer) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TASKRUSH_SDK_FIXTURE=1")
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := startHost(t, in, out)
	go func() { h.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return h, stderr
}

func (h *host) send(v interface{}) {
	h.t.Helper()
	var line []byte
	switch v := v.(type) {
	case string:
		line = []byte(v)
	default:
		var err error
		if line, err = json.Marshal(v); err != nil {
			h.t.Fatal(err)
		}
	}
	if _, err := h.in.Write(append(line, '\n')); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) request(id interface{}, method string, params interface{}) {
	h.t.Helper()
	m := message{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		m["params"] = params
	}
	h.send(m)
}

// response returns the next response and the notifications before it.
func (h *host) response() (message, []message) {
	h.t.Helper()
	var notes []message
	for {
		select {
		case m, ok := <-h.lines:
			if !ok {
				h.t.Fatal("plugin closed stdout")
			}
			if _, isResponse := m["id"]; isResponse {
				return m, notes
			}
			notes = append(notes, m)
		case <-time.After(5 * time.Second):
			h.t.Fatal("timed out waiting for the plugin")
		}
	}
}

func (h *host) call(id interface{}, method string, params interface{}) (message, []message) {
	h.t.Helper()
	h.request(id, method, params)
	return h.response()
}

func (h *host) initialize(versions []int, config message) message {
	h.t.Helper()
	r, _ := h.call(0, "initialize", initParams(versions, config))
	return r
}

// close closes stdin and returns how serving ended.
func (h *host) close() error {
	h.t.Helper()
	h.in.Close()
	select {
	case err := <-h.done:
		return err
	case <-time.After(5 * time.Second):
		h.t.Fatal("the plugin did not stop after EOF")
		return nil
	}
}

func initParams(versions []int, config message) message {
	if config == nil {
		config = message{}
	}
	return message{
		"protocol_versions": versions,
		"taskrush_version":  "0.3.0",
		"name":              "fixture",
		"config":            config,
		"project_root":      "/project",
		"permissions":       []message{{"kind": "environment", "vars": []string{"SLACK_WEBHOOK"}}},
	}
}

func taskContext(task string, config message) message {
	if config == nil {
		config = message{}
	}
	return message{"task_name": task, "command": "make", "working_dir": "/project", "env_vars": message{}, "config": config, "run_id": 7}
}

func errorOf(t *testing.T, r message) (float64, string) {
	t.Helper()
	e, ok := r["error"].(map[string]interface{})
	if !ok {
		t.Fatalf("expected an error, got %v", r)
	}
	return e["code"].(float64), e["message"].(string)
}

func expectEqual(t *testing.T, got, want interface{}) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Fatalf("\n got: %s\nwant: %s", g, w)
	}
}

func TestHandshakeChoosesProtocol1AndListsOnlyImplementedHooks(t *testing.T) {
	h := inProcess(t, fixture())
	r := h.initialize([]int{2, 1}, nil)
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": 0, "result": message{
		"commands": []message{
			{"description": "Print the arguments", "name": "echo"},
			{"description": "Exit 3", "name": "fail"},
			{"description": "Write to stdout by mistake", "name": "noisy"},
		},
		"hooks":    []string{"before_task", "after_task"},
		"name":     "fixture",
		"protocol": 1,
		"version":  "0.1.0",
	}})
}

func TestHandshakeRefusesUnknownProtocolMajors(t *testing.T) {
	h := inProcess(t, fixture())
	code, msg := errorOf(t, h.initialize([]int{2, 3}, nil))
	if code != CodeUnsupportedProtocol || !strings.Contains(msg, "[2, 3]") {
		t.Fatalf("got %v %q", code, msg)
	}
}

func TestAFailingOnInitializeIsAnInternalError(t *testing.T) {
	h := inProcess(t, fixture())
	code, msg := errorOf(t, h.initialize([]int{1}, message{"fail_init": true}))
	if code != CodeInternalError || !strings.Contains(msg, "fail_init") {
		t.Fatalf("got %v %q", code, msg)
	}
}

func TestHooksAnswerNullAndLogsReachTheHost(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	r, notes := h.call(1, "before_task", message{"context": taskContext("build", nil)})
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": 1, "result": nil})
	expectEqual(t, notes, []message{{"jsonrpc": "2.0", "method": "log", "params": message{"level": "info", "message": "before build in /project"}}})
	r, notes = h.call("a", "after_task", message{"context": taskContext("build", nil), "result": message{"status": "failed", "exit_code": 2, "duration_ms": 12}})
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": "a", "result": nil})
	expectEqual(t, notes[0]["params"], message{"message": "reporting", "task": "build", "percent": 50})
	expectEqual(t, notes[1]["params"], message{"level": "debug", "message": "after build: failed 2 cached=false"})
}

func TestVetoIsError32010WithTheReason(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	r, _ := h.call(1, "before_task", message{"context": taskContext("deploy", message{"veto": true})})
	expectEqual(t, r["error"], message{"code": -32010, "message": "task `deploy` is not allowed"})
}

func TestErrorsAndPanicsAreInternalErrorsAndThePluginCarriesOn(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	r, _ := h.call(1, "before_task", message{"context": taskContext("boom", nil)})
	expectEqual(t, r["error"], message{"code": -32603, "message": "boom"})
	r, _ = h.call(2, "before_task", message{"context": taskContext("panic", nil)})
	expectEqual(t, r["error"], message{"code": -32603, "message": "panic: oh no"})
	r, _ = h.call(3, "before_task", message{"context": taskContext("build", nil)})
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": 3, "result": nil})
}

func TestCommands(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	r, _ := h.call(1, "command", message{"name": "echo", "args": []string{"a", "b"}, "cwd": "/tmp"})
	expectEqual(t, r["result"], message{"exit_code": 0, "stderr": "", "stdout": "a b\n"})
	r, _ = h.call(2, "command", message{"name": "fail", "cwd": "/tmp"})
	expectEqual(t, r["result"], message{"exit_code": 3, "stderr": "failed in /tmp\n", "stdout": ""})
	r, _ = h.call(3, "command", message{"name": "nope", "args": []string{}, "cwd": "/tmp"})
	if code, _ := errorOf(t, r); code != CodeInvalidParams {
		t.Fatalf("got %v", r)
	}
}

func TestUnknownMethodsAndUndeclaredHooksAre32601(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	r, _ := h.call(1, "frobnicate", message{})
	if code, _ := errorOf(t, r); code != CodeMethodNotFound {
		t.Fatalf("got %v", r)
	}
	r, _ = h.call(2, "on_task_failure", message{"context": taskContext("x", nil), "error": message{"message": "x"}})
	if code, _ := errorOf(t, r); code != CodeMethodNotFound {
		t.Fatalf("got %v", r)
	}
	p := New("bare", "1.0.0")
	h = inProcess(t, p)
	r, _ = h.call(1, "command", message{"name": "x", "cwd": "/"})
	if code, _ := errorOf(t, r); code != CodeMethodNotFound {
		t.Fatalf("got %v", r)
	}
}

func TestJunkGetsAParseErrorAndNotificationsNoAnswer(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	h.send("this is not json")
	h.send(message{"jsonrpc": "2.0", "method": "whatever", "params": message{}})
	h.send("[]")
	r, _ := h.response()
	if code, _ := errorOf(t, r); code != CodeParseError || r["id"] != nil {
		t.Fatalf("got %v", r)
	}
	r, _ = h.response()
	if code, _ := errorOf(t, r); code != CodeInvalidRequest {
		t.Fatalf("got %v", r)
	}
	r, _ = h.call(1, "before_task", message{"context": taskContext("build", nil)})
	expectEqual(t, r["id"], 1)
}

func TestLinesOver16MiBAreDroppedWithAParseError(t *testing.T) {
	h := inProcess(t, fixture())
	huge := `{"jsonrpc":"2.0","id":1,"method":"x","params":"` + strings.Repeat("a", MaxLineBytes) + `"}`
	go h.send(huge)
	r, _ := h.response()
	if code, _ := errorOf(t, r); code != CodeParseError || r["id"] != nil {
		t.Fatalf("got %v", r)
	}
	r, _ = h.call(2, "x", nil)
	expectEqual(t, r["id"], 2)
}

func TestConcurrentRequestsAreAnsweredByIDAsTheyFinish(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	started := time.Now()
	h.request(1, "before_task", message{"context": taskContext("slow", message{"sleep": 0.6})})
	for i := 2; i <= 6; i++ {
		h.request(i, "before_task", message{"context": taskContext("fast", nil)})
	}
	var ids []int
	for len(ids) < 6 {
		r, _ := h.response()
		if r["result"] != nil {
			t.Fatalf("got %v", r)
		}
		ids = append(ids, int(r["id"].(float64)))
	}
	if ids[5] != 1 {
		t.Fatalf("the slow request was not last: %v", ids)
	}
	sort.Ints(ids)
	if !reflect.DeepEqual(ids, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("got ids %v", ids)
	}
	if time.Since(started) > 1500*time.Millisecond {
		t.Fatalf("took %v", time.Since(started))
	}
}

func TestEOFReturnsNilAfterAnsweringInFlightRequests(t *testing.T) {
	h := inProcess(t, fixture())
	h.initialize([]int{1}, nil)
	h.request(1, "after_task", message{"context": taskContext("x", message{"sleep": 0.3}), "result": message{"status": "success", "duration_ms": 1}})
	time.Sleep(50 * time.Millisecond)
	go func() { h.in.Close() }()
	r, _ := h.response()
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": 1, "result": nil})
	if err := <-h.done; err != nil {
		t.Fatal(err)
	}
}

func TestSubprocessShutdownThenEOFExits0(t *testing.T) {
	h, _ := subprocess(t)
	if r := h.initialize([]int{1}, nil); r["result"] == nil {
		t.Fatalf("got %v", r)
	}
	r, _ := h.call(9, "shutdown", nil)
	expectEqual(t, r, message{"jsonrpc": "2.0", "id": 9, "result": nil})
	started := time.Now()
	if err := h.close(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if time.Since(started) > time.Second {
		t.Fatalf("took %v to exit", time.Since(started))
	}
}

func TestSubprocessStrayStdoutGoesToStderr(t *testing.T) {
	h, stderr := subprocess(t)
	h.initialize([]int{1}, nil)
	r, _ := h.call(1, "command", message{"name": "noisy", "cwd": "/tmp"})
	expectEqual(t, r["result"], message{"exit_code": 0, "stderr": "", "stdout": ""})
	if err := h.close(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	for m := range h.lines {
		if _, bad := m["not json"]; bad {
			t.Fatalf("junk on stdout: %v", m)
		}
	}
	for _, want := range []string{"stray println", "stray child"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("%q not in stderr %q", want, stderr.String())
		}
	}
}

func TestConfigHelpers(t *testing.T) {
	var c Config
	if err := json.Unmarshal([]byte(`{"s":"x","b":true,"l":["a",1,"b"],"one":"c","m":{"k":["v"]},"n":2.5}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.String("s") != "x" || c.String("b") != "" || !c.Bool("b", false) || c.Bool("nope", true) != true || c.Float("n", 0) != 2.5 {
		t.Fatalf("scalars: %v", c)
	}
	expectEqual(t, c.Strings("l"), []string{"a", "b"})
	expectEqual(t, c.Strings("one"), []string{"c"})
	expectEqual(t, c.Map("m").Strings("k"), []string{"v"})
	var s struct {
		S string `json:"s"`
	}
	if err := c.Decode(&s); err != nil || s.S != "x" {
		t.Fatalf("decode: %v %v", s, err)
	}
	if err := json.Unmarshal([]byte(`null`), &c); err != nil || c != nil {
		t.Fatalf("null: %v %v", c, err)
	}
	if !IsVeto(fmt.Errorf("wrapped: %w", Veto("no"))) || IsVeto(errors.New("no")) {
		t.Fatal("IsVeto")
	}
}
