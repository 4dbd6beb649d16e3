// Package plugin is the TaskRush plugin SDK for Go (standard library only).
//
// A TaskRush external plugin is a process the daemon starts; it speaks
// JSON-RPC 2.0, one JSON object per line, on stdin (host to plugin) and
// stdout (plugin to host). This package does the framing (with the 16 MiB
// line cap), the initialize handshake, the dispatch of the hooks and
// commands you register, concurrent requests (a goroutine per request,
// whole lines written under a mutex), logging to the host, and a clean
// return when the host closes stdin. docs/plugins.md in the TaskRush
// repository is the normative description of the protocol.
//
//	p := plugin.New("no-friday-deploys", "1.0.0")
//	p.BeforeTask(func(ctx plugin.TaskContext) error {
//		if ctx.TaskName == "deploy" && time.Now().Weekday() == time.Friday {
//			return plugin.Veto("no deploys on Fridays")
//		}
//		return nil
//	})
//	if err := p.Run(); err != nil {
//		log.Fatal(err)
//	}
//
// While Run serves the real stdin/stdout, os.Stdout and file descriptor 1
// (fmt.Println, child processes given os.Stdout) write to stderr, which the
// daemon captures into its log: stdout carries protocol messages only.
package plugin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// ProtocolVersions are the protocol majors this SDK speaks.
var ProtocolVersions = []int{1}

// MaxLineBytes is the longest line (without its newline) either side may send.
const MaxLineBytes = 16 << 20

// JSON-RPC error codes of the plugin protocol.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeVeto: a hook refused on purpose (before_task vetoing a task).
	CodeVeto = -32010
	// CodeUnsupportedProtocol: none of the offered protocol majors is spoken.
	CodeUnsupportedProtocol = -32011
)

var hookNames = []string{"before_task", "after_task", "on_task_failure"}

// Error is answered to the host as a JSON-RPC error with its code. A
// handler's other errors are answered with CodeInternalError.
type Error struct {
	Code    int
	Message string
	Data    interface{}
}

func (e *Error) Error() string { return e.Message }

// NewError returns an error answered with the given JSON-RPC code.
func NewError(code int, message string) *Error { return &Error{Code: code, Message: message} }

// Veto returns the error before_task returns to stop the task; reason is
// shown to the user.
func Veto(reason string) error { return &Error{Code: CodeVeto, Message: reason} }

// Vetof is Veto with a format.
func Vetof(format string, args ...interface{}) error {
	return Veto(fmt.Sprintf(format, args...))
}

// IsVeto reports whether err is (or wraps) a veto.
func IsVeto(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeVeto
}

// Config is a plugin's configuration: a JSON object.
type Config map[string]interface{}

// UnmarshalJSON reads an object; null or any other value is an empty Config.
func (c *Config) UnmarshalJSON(data []byte) error {
	var m map[string]interface{}
	if err := json.Unmarshal(data, &m); err != nil {
		*c = nil
		return nil
	}
	*c = m
	return nil
}

// String is the string at key, or "".
func (c Config) String(key string) string {
	s, _ := c[key].(string)
	return s
}

// Bool is the boolean at key, or def.
func (c Config) Bool(key string, def bool) bool {
	if b, ok := c[key].(bool); ok {
		return b
	}
	return def
}

// Float is the number at key, or def.
func (c Config) Float(key string, def float64) float64 {
	if f, ok := c[key].(float64); ok {
		return f
	}
	return def
}

// Strings is the list of strings at key (a single string is a list of
// one); other elements are left out.
func (c Config) Strings(key string) []string {
	return toStrings(c[key])
}

// Map is the object at key, or nil.
func (c Config) Map(key string) Config {
	m, _ := c[key].(map[string]interface{})
	return m
}

// Decode stores the configuration in v (a pointer to a struct or map), as
// encoding/json would.
func (c Config) Decode(v interface{}) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func toStrings(v interface{}) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []interface{}:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return v
	}
	return nil
}

// Permission is a permission granted to the plugin, e.g.
// {"kind": "environment", "vars": ["SLACK_WEBHOOK"]}.
type Permission struct {
	// "filesystem", "network", "environment", "process" or "plugins".
	Kind     string   `json:"kind"`
	Paths    []string `json:"paths,omitempty"`
	Hosts    []string `json:"hosts,omitempty"`
	Vars     []string `json:"vars,omitempty"`
	Commands []string `json:"commands,omitempty"`
	// Plugins whose commands it may call through the host (kind "plugins").
	Names []string `json:"names,omitempty"`
}

// InitializeParams are the params of the initialize request.
type InitializeParams struct {
	ProtocolVersions []int  `json:"protocol_versions"`
	TaskrushVersion  string `json:"taskrush_version"`
	// The plugin's name as the .rush file names it.
	Name string `json:"name"`
	// The global config of the plugin's .rush entry.
	Config      Config       `json:"config"`
	ProjectRoot string       `json:"project_root"`
	Permissions []Permission `json:"permissions"`
	// The host calls the host serves; HostCall sends no other.
	HostMethods []string `json:"host_methods"`
}

// TaskContext is what a hook learns about a task.
type TaskContext struct {
	TaskName string `json:"task_name"`
	// The task's cmd (empty for an aggregate task).
	Command string `json:"command"`
	// Where the task runs: the project root.
	WorkingDir string `json:"working_dir"`
	// The task's environment, limited to the plugin's Environment permission.
	EnvVars map[string]string `json:"env_vars"`
	// The plugin's global config merged with the task's plugins.<name> entry.
	Config Config `json:"config"`
	// The run the task belongs to: the same across the hooks of one run
	// (0 from the conformance kit).
	RunID uint64 `json:"run_id"`
}

// TaskResult is how a task ended (after_task).
type TaskResult struct {
	// "success", "failed" or "cancelled".
	Status string `json:"status"`
	// The command's exit code; nil when the protocol leaves it absent
	// (killed by a signal, never started, cancelled, vetoed).
	ExitCode *int `json:"exit_code,omitempty"`
	// Wall time of the task's process in ms: from the spawn of its shell
	// to its exit, plugin hooks and the cache check not counted.
	DurationMs uint64 `json:"duration_ms"`
	// The task was up to date and did not run.
	Cached bool `json:"cached"`
}

// TaskError is why a task failed (on_task_failure).
type TaskError struct {
	Message string `json:"message"`
	// As in TaskResult: nil when the protocol leaves it absent.
	ExitCode *int `json:"exit_code,omitempty"`
}

// CommandResult is what `taskrush <command>` prints and exits with.
type CommandResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

type command struct {
	name, description string
	fn                func(args []string, cwd string) (CommandResult, error)
}

// Plugin is a TaskRush plugin: register handlers, then call Run.
type Plugin struct {
	Name    string
	Version string
	// Grace is how long Run lets requests still being handled finish after
	// the host closed stdin (the host sends SIGTERM 2 s after closing it).
	Grace time.Duration

	beforeTask    func(TaskContext) error
	afterTask     func(TaskContext, TaskResult) error
	onTaskFailure func(TaskContext, TaskError) error
	onInitialize  func(InitializeParams) error
	onShutdown    func()
	commands      []command

	writeMu sync.Mutex
	out     io.Writer

	initMu   sync.RWMutex
	init     InitializeParams
	protocol int

	inFlight sync.WaitGroup

	hostMu  sync.Mutex
	pending map[uint64]chan hostAnswer
	nextID  uint64
}

// New returns a plugin with the given name and version.
func New(name, version string) *Plugin {
	return &Plugin{Name: name, Version: version, Grace: time.Second}
}

// BeforeTask registers fn to run before a task; returning Veto("why")
// stops it (any other error stops it too, reported as a plugin failure).
func (p *Plugin) BeforeTask(fn func(ctx TaskContext) error) { p.beforeTask = fn }

// AfterTask registers fn to run after a task ended (success, failed,
// cancelled or cached).
func (p *Plugin) AfterTask(fn func(ctx TaskContext, result TaskResult) error) { p.afterTask = fn }

// OnTaskFailure registers fn to run after a task failed.
func (p *Plugin) OnTaskFailure(fn func(ctx TaskContext, taskErr TaskError) error) {
	p.onTaskFailure = fn
}

// OnInitialize registers fn to run on the handshake; an error fails the
// plugin's start.
func (p *Plugin) OnInitialize(fn func(params InitializeParams) error) { p.onInitialize = fn }

// OnShutdown registers fn to run when the host asks the plugin to shut down.
func (p *Plugin) OnShutdown(fn func()) { p.onShutdown = fn }

// Command adds `taskrush <name> args...`.
func (p *Plugin) Command(name, description string, fn func(args []string, cwd string) (CommandResult, error)) {
	for i := range p.commands {
		if p.commands[i].name == name {
			p.commands[i] = command{name, description, fn}
			return
		}
	}
	p.commands = append(p.commands, command{name, description, fn})
}

// Init returns the initialize params (zero before the handshake).
func (p *Plugin) Init() InitializeParams {
	p.initMu.RLock()
	defer p.initMu.RUnlock()
	return p.init
}

// Log sends a log line to the host: level is "error", "warn", "info" or "debug".
func (p *Plugin) Log(level, message string) {
	switch level {
	case "error", "warn", "info", "debug":
	case "warning":
		level = "warn"
	default:
		level = "info"
	}
	if !p.notify("log", map[string]interface{}{"level": level, "message": message}) {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", level, message)
	}
}

// Logf is Log with a format.
func (p *Plugin) Logf(level, format string, args ...interface{}) {
	p.Log(level, fmt.Sprintf(format, args...))
}

// Progress reports progress of long work; task may be "", percent (0 to
// 100) is left out when negative.
func (p *Plugin) Progress(message, task string, percent float64) {
	params := map[string]interface{}{"message": message}
	if task != "" {
		params["task"] = task
	}
	if percent >= 0 {
		params["percent"] = percent
	}
	p.notify("progress", params)
}

// Run serves the process's stdin and stdout until stdin is closed, and
// returns nil then. File descriptor 1 is moved first, so that stray writes
// to stdout go to stderr.
func (p *Plugin) Run() error {
	return p.Serve(os.Stdin, claimStdout())
}

// Serve serves requests read from r, writing to w, until r ends (nil) or
// fails (the error). Tests use it with pipes.
func (p *Plugin) Serve(r io.Reader, w io.Writer) error {
	p.writeMu.Lock()
	p.out = w
	p.writeMu.Unlock()
	br := bufio.NewReaderSize(r, 64<<10)
	var readErr error
	for {
		line, tooLong, err := readLine(br, MaxLineBytes)
		if tooLong {
			p.replyError(json.RawMessage("null"), CodeParseError, fmt.Sprintf("message longer than %d bytes", MaxLineBytes), nil)
		} else if line = bytes.TrimSpace(line); len(line) > 0 {
			p.receive(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	p.failHostCalls("the host closed stdin")
	p.drain()
	return readErr
}

// readLine reads one line without its newline. A line longer than max is
// read to its end and dropped (tooLong). err is io.EOF after the last line.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		content := chunk
		if err == nil {
			content = chunk[:len(chunk)-1]
		}
		if !tooLong {
			if len(line)+len(content) > max {
				tooLong, line = true, nil
			} else {
				line = append(line, content...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			line = nil
		}
		return line, tooLong, err
	}
}

func (p *Plugin) drain() {
	done := make(chan struct{})
	go func() {
		p.inFlight.Wait()
		close(done)
	}()
	timer := time.NewTimer(p.Grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

func (p *Plugin) receive(line []byte) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		switch {
		case !json.Valid(line):
			p.replyError(json.RawMessage("null"), CodeParseError, "invalid JSON: "+err.Error(), nil)
		case line[0] == '[':
			p.replyError(json.RawMessage("null"), CodeInvalidRequest, "batches are not supported", nil)
		default:
			p.replyError(json.RawMessage("null"), CodeInvalidRequest, "a message must be a JSON object", nil)
		}
		return
	}
	id, hasID := msg["id"]
	if !hasID {
		return // a notification: the host sends none this SDK knows
	}
	rawMethod, hasMethod := msg["method"]
	if !hasMethod {
		p.answered(id, msg) // the answer to a host call
		return
	}
	var method string
	if err := json.Unmarshal(rawMethod, &method); err != nil {
		p.replyError(id, CodeInvalidRequest, "`method` must be a string", nil)
		return
	}
	params := msg["params"]
	if method == "initialize" || method == "shutdown" {
		// In order: the host waits for these, and later requests rely on them.
		p.handle(id, method, params)
		return
	}
	p.inFlight.Add(1)
	go func() {
		defer p.inFlight.Done()
		p.handle(id, method, params)
	}()
}

func (p *Plugin) handle(id json.RawMessage, method string, params json.RawMessage) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in %s: %v\n%s", method, v, debug.Stack())
			p.replyError(id, CodeInternalError, fmt.Sprintf("panic: %v", v), nil)
		}
	}()
	result, err := p.dispatch(method, params)
	if err != nil {
		var rpcErr *Error
		if errors.As(err, &rpcErr) {
			p.replyError(id, rpcErr.Code, rpcErr.Message, rpcErr.Data)
		} else {
			p.replyError(id, CodeInternalError, err.Error(), nil)
		}
		return
	}
	p.reply(id, result)
}

type hookParams struct {
	Context *TaskContext `json:"context"`
	Result  *TaskResult  `json:"result"`
	Error   *TaskError   `json:"error"`
}

type commandParams struct {
	Name *string  `json:"name"`
	Args []string `json:"args"`
	Cwd  string   `json:"cwd"`
}

func (p *Plugin) hasHook(name string) bool {
	switch name {
	case "before_task":
		return p.beforeTask != nil
	case "after_task":
		return p.afterTask != nil
	case "on_task_failure":
		return p.onTaskFailure != nil
	}
	return false
}

func (p *Plugin) dispatch(method string, params json.RawMessage) (interface{}, error) {
	switch {
	case method == "initialize":
		return p.initialize(params)
	case method == "shutdown":
		if p.onShutdown != nil {
			p.onShutdown()
		}
		return nil, nil
	case p.hasHook(method):
		var hp hookParams
		if err := json.Unmarshal(params, &hp); err != nil || hp.Context == nil {
			return nil, NewError(CodeInvalidParams, "params must be an object with a `context` object")
		}
		if hp.Context.EnvVars == nil {
			hp.Context.EnvVars = map[string]string{}
		}
		if hp.Context.Config == nil {
			hp.Context.Config = Config{}
		}
		switch method {
		case "before_task":
			return nil, p.beforeTask(*hp.Context)
		case "after_task":
			var result TaskResult
			if hp.Result != nil {
				result = *hp.Result
			}
			return nil, p.afterTask(*hp.Context, result)
		default:
			var taskErr TaskError
			if hp.Error != nil {
				taskErr = *hp.Error
			}
			return nil, p.onTaskFailure(*hp.Context, taskErr)
		}
	case method == "command" && len(p.commands) > 0:
		var cp commandParams
		if err := json.Unmarshal(params, &cp); err != nil || cp.Name == nil {
			return nil, NewError(CodeInvalidParams, "params must be an object with a `name` string")
		}
		for _, c := range p.commands {
			if c.name == *cp.Name {
				if cp.Args == nil {
					cp.Args = []string{}
				}
				result, err := c.fn(cp.Args, cp.Cwd)
				if err != nil {
					return nil, err
				}
				return result, nil
			}
		}
		return nil, NewError(CodeInvalidParams, fmt.Sprintf("unknown command `%s`", *cp.Name))
	}
	return nil, NewError(CodeMethodNotFound, fmt.Sprintf("method `%s` not found", method))
}

func (p *Plugin) initialize(params json.RawMessage) (interface{}, error) {
	var offered struct {
		ProtocolVersions *[]json.RawMessage `json:"protocol_versions"`
	}
	if err := json.Unmarshal(params, &offered); err != nil || offered.ProtocolVersions == nil {
		return nil, NewError(CodeInvalidParams, "params must be an object with a `protocol_versions` list")
	}
	chosen := 0
	for _, raw := range *offered.ProtocolVersions {
		var v int
		if json.Unmarshal(raw, &v) != nil {
			continue
		}
		for _, mine := range ProtocolVersions {
			if v == mine && v > chosen {
				chosen = v
			}
		}
	}
	if chosen == 0 {
		list := make([]string, len(*offered.ProtocolVersions))
		for i, raw := range *offered.ProtocolVersions {
			list[i] = string(raw)
		}
		return nil, &Error{
			Code: CodeUnsupportedProtocol,
			Message: fmt.Sprintf("unsupported protocol versions [%s]; this plugin speaks %v",
				strings.Join(list, ", "), ProtocolVersions),
			Data: map[string]interface{}{"supported": ProtocolVersions},
		}
	}
	var init InitializeParams
	if err := json.Unmarshal(params, &init); err != nil {
		return nil, NewError(CodeInvalidParams, "invalid initialize params: "+err.Error())
	}
	if init.Config == nil {
		init.Config = Config{}
	}
	p.initMu.Lock()
	p.init, p.protocol = init, chosen
	p.initMu.Unlock()
	if p.onInitialize != nil {
		if err := p.onInitialize(init); err != nil {
			return nil, err
		}
	}
	hooks := []string{}
	for _, h := range hookNames {
		if p.hasHook(h) {
			hooks = append(hooks, h)
		}
	}
	commands := []map[string]string{}
	for _, c := range p.commands {
		commands = append(commands, map[string]string{"name": c.name, "description": c.description})
	}
	return map[string]interface{}{
		"name":     p.Name,
		"version":  p.Version,
		"protocol": chosen,
		"hooks":    hooks,
		"commands": commands,
	}, nil
}

type rpcError struct {
	Code    int         `json:"code"`
	Message string      `json:"message"`
	Data    interface{} `json:"data,omitempty"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

func (p *Plugin) reply(id json.RawMessage, result interface{}) {
	data, err := json.Marshal(result)
	if err != nil {
		p.replyError(id, CodeInternalError, "the result is not valid JSON: "+err.Error(), nil)
		return
	}
	line, err := json.Marshal(response{JSONRPC: "2.0", ID: id, Result: data})
	if err != nil || len(line) > MaxLineBytes {
		p.replyError(id, CodeInternalError, fmt.Sprintf("the result is longer than %d bytes", MaxLineBytes), nil)
		return
	}
	p.write(line)
}

func (p *Plugin) replyError(id json.RawMessage, code int, message string, data interface{}) {
	line, err := json.Marshal(response{JSONRPC: "2.0", ID: id, Error: &rpcError{code, message, data}})
	if err != nil || len(line) > MaxLineBytes {
		if len(message) > 65536 {
			message = message[:65536]
		}
		line, _ = json.Marshal(response{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: message}})
	}
	p.write(line)
}

// notify sends a notification; false when not serving.
func (p *Plugin) notify(method string, params interface{}) bool {
	line, err := json.Marshal(map[string]interface{}{"jsonrpc": "2.0", "method": method, "params": params})
	if err != nil || len(line) > MaxLineBytes {
		return true
	}
	return p.write(line)
}

func (p *Plugin) write(line []byte) bool {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if p.out == nil {
		return false
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := p.out.Write(buf); err != nil {
		p.out = nil // the host is gone; the end of stdin follows
	}
	return true
}
