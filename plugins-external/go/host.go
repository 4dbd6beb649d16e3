package plugin

import (
	"encoding/json"
	"fmt"
)

// Host-call error codes (beside the JSON-RPC ones).
const (
	// CodePermissionDenied: the plugin's grants do not allow the call;
	// Data names the permission and the item.
	CodePermissionDenied = -32020
	// CodeHostCallFailed: the call was allowed but failed.
	CodeHostCallFailed = -32021
)

// IsPermissionDenied reports whether err is a host call the grants refused.
func IsPermissionDenied(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Code == CodePermissionDenied
}

type hostAnswer struct {
	result json.RawMessage
	err    *Error
}

// HostCall calls the host: method with params, the result decoded into
// result (may be nil). Only methods the host offered in initialize
// (HostMethods) are sent; any other fails at once. It blocks the calling
// handler's goroutine until the host answers (the host bounds it by the
// deadline of the call being handled); call it from hooks and commands,
// not from OnInitialize.
func (p *Plugin) HostCall(method string, params, result interface{}) error {
	init := p.Init()
	if init.ProtocolVersions != nil && !contains(init.HostMethods, method) {
		return &Error{Code: CodeHostCallFailed, Message: fmt.Sprintf("the host does not offer `%s`; it is older than this plugin", method)}
	}
	p.hostMu.Lock()
	if p.pending == nil {
		p.pending = map[uint64]chan hostAnswer{}
	}
	p.nextID++
	id := p.nextID
	ch := make(chan hostAnswer, 1)
	p.pending[id] = ch
	p.hostMu.Unlock()
	msg := map[string]interface{}{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	line, err := json.Marshal(msg)
	if err != nil {
		p.forget(id)
		return fmt.Errorf("`%s` params: %w", method, err)
	}
	if !p.write(line) {
		p.forget(id)
		return &Error{Code: CodeHostCallFailed, Message: fmt.Sprintf("no host to call `%s` on (the plugin is not running)", method)}
	}
	answer := <-ch
	if answer.err != nil {
		return answer.err
	}
	if result == nil || len(answer.result) == 0 {
		return nil
	}
	if err := json.Unmarshal(answer.result, result); err != nil {
		return fmt.Errorf("the host's answer to `%s`: %w", method, err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *Plugin) forget(id uint64) {
	p.hostMu.Lock()
	delete(p.pending, id)
	p.hostMu.Unlock()
}

// answered routes a response from the host to the HostCall waiting for it.
func (p *Plugin) answered(rawID json.RawMessage, msg map[string]json.RawMessage) {
	var id uint64
	if json.Unmarshal(rawID, &id) != nil {
		return
	}
	p.hostMu.Lock()
	ch, ok := p.pending[id]
	delete(p.pending, id)
	p.hostMu.Unlock()
	if !ok {
		return
	}
	if raw, isErr := msg["error"]; isErr && string(raw) != "null" {
		var e Error
		if json.Unmarshal(raw, &e) != nil {
			e = Error{Code: CodeInternalError, Message: string(raw)}
		}
		ch <- hostAnswer{err: &e}
		return
	}
	ch <- hostAnswer{result: msg["result"]}
}

func (p *Plugin) failHostCalls(why string) {
	p.hostMu.Lock()
	pending := p.pending
	p.pending = nil
	p.hostMu.Unlock()
	for _, ch := range pending {
		ch <- hostAnswer{err: &Error{Code: CodeHostCallFailed, Message: why}}
	}
}

// GraphEnv is one env: entry of a task; Value is nil unless the
// environment grant names the variable.
type GraphEnv struct {
	Name  string  `json:"name"`
	Value *string `json:"value,omitempty"`
}

// GraphTask is one task as the .rush file writes it (unexpanded).
type GraphTask struct {
	Command     string     `json:"command,omitempty"`
	Description string     `json:"description,omitempty"`
	Deps        []string   `json:"deps"`
	Env         []GraphEnv `json:"env"`
	Sources     []string   `json:"sources"`
	Outputs     []string   `json:"outputs"`
	Dir         string     `json:"dir,omitempty"`
	Plugins     []string   `json:"plugins"`
}

// TaskGraph is the project's tasks and dependency edges [task, dependency].
type TaskGraph struct {
	Root  string               `json:"root"`
	Tasks map[string]GraphTask `json:"tasks"`
	Edges [][2]string          `json:"edges"`
}

// TaskResultEntry is one ended task of the current run.
type TaskResultEntry struct {
	Task       string `json:"task"`
	Status     string `json:"status"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	DurationMs uint64 `json:"duration_ms"`
	Cached     bool   `json:"cached"`
}

// TaskResults are the tasks of a run that ended so far, in that order.
type TaskResults struct {
	RunID uint64            `json:"run_id"`
	Tasks []TaskResultEntry `json:"tasks"`
}

// HTTPResult is the answer of a host-made HTTP request.
type HTTPResult struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// RunResult is how a program run by the host ended (ExitCode nil: killed).
type RunResult struct {
	ExitCode *int   `json:"exit_code,omitempty"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// EnvGet returns a variable the environment grant names ("", false when unset).
func (p *Plugin) EnvGet(name string) (string, bool, error) {
	var r struct {
		Value *string `json:"value"`
	}
	if err := p.HostCall("env_get", map[string]string{"name": name}, &r); err != nil || r.Value == nil {
		return "", false, err
	}
	return *r.Value, true, nil
}

// ReadFile reads a UTF-8 file within the granted paths (relative: to the project root).
func (p *Plugin) ReadFile(path string) (string, error) {
	var r struct {
		Contents string `json:"contents"`
	}
	err := p.HostCall("read_file", map[string]string{"path": path}, &r)
	return r.Contents, err
}

// WriteFile writes (or appends to) a file within the granted writable paths.
func (p *Plugin) WriteFile(path, contents string, appendTo bool) (uint64, error) {
	var r struct {
		BytesWritten uint64 `json:"bytes_written"`
	}
	err := p.HostCall("write_file", map[string]interface{}{"path": path, "contents": contents, "append": appendTo}, &r)
	return r.BytesWritten, err
}

// HTTPRequest has the host make an HTTP(S) request to a granted network host.
func (p *Plugin) HTTPRequest(method, url string, headers map[string]string, body string) (HTTPResult, error) {
	if headers == nil {
		headers = map[string]string{}
	}
	var r HTTPResult
	err := p.HostCall("http_request", map[string]interface{}{"method": method, "url": url, "headers": headers, "body": body}, &r)
	return r, err
}

// RunCommand has the host run a granted process program (no shell) in the project root.
func (p *Plugin) RunCommand(program string, args ...string) (RunResult, error) {
	if args == nil {
		args = []string{}
	}
	var r RunResult
	err := p.HostCall("run_command", map[string]interface{}{"program": program, "args": args}, &r)
	return r, err
}

// TaskGraph returns the project's tasks as written and their edges.
func (p *Plugin) TaskGraph() (TaskGraph, error) {
	var r TaskGraph
	err := p.HostCall("task_graph", map[string]interface{}{}, &r)
	return r, err
}

// TaskResults returns the tasks of the current run that ended so far.
func (p *Plugin) TaskResults() (TaskResults, error) {
	var r TaskResults
	err := p.HostCall("task_results", map[string]interface{}{}, &r)
	return r, err
}

// CallCommand runs command of another plugin through the host (declared
// in [permissions] plugins and granted).
func (p *Plugin) CallCommand(plugin, command string, args ...string) (CommandResult, error) {
	if args == nil {
		args = []string{}
	}
	var r CommandResult
	err := p.HostCall("call_command", map[string]interface{}{"plugin": plugin, "command": command, "args": args}, &r)
	return r, err
}
