package plugin

import (
	"fmt"
	"testing"
	"time"
)

// next returns the next line the plugin wrote.
func (h *host) next() message {
	h.t.Helper()
	select {
	case m, ok := <-h.lines:
		if !ok {
			h.t.Fatal("plugin closed stdout")
		}
		return m
	case <-time.After(5 * time.Second):
		h.t.Fatal("timed out waiting for the plugin")
	}
	return nil
}

func hostCallPlugin(t *testing.T, p *Plugin, methods []string) *host {
	h := inProcess(t, p)
	params := initParams([]int{1}, nil)
	params["host_methods"] = methods
	r, _ := h.call(0, "initialize", params)
	if _, ok := r["result"]; !ok {
		t.Fatalf("initialize failed: %v", r)
	}
	return h
}

func TestAHostCallIsAnsweredWhileOtherRequestsAreServedMeanwhile(t *testing.T) {
	p := New("p", "1.0.0")
	p.BeforeTask(func(TaskContext) error { return nil })
	p.Command("count", "", func([]string, string) (CommandResult, error) {
		g, err := p.TaskGraph()
		if err != nil {
			return CommandResult{}, err
		}
		return CommandResult{Stdout: fmt.Sprintf("%d tasks, edge %s->%s", len(g.Tasks), g.Edges[0][0], g.Edges[0][1])}, nil
	})
	h := hostCallPlugin(t, p, []string{"task_graph"})
	h.request(2, "command", message{"name": "count", "cwd": "/"})
	call := h.next()
	expectEqual(t, call["method"], "task_graph")
	h.request(3, "before_task", message{"context": taskContext("build", nil)})
	expectEqual(t, h.next(), message{"jsonrpc": "2.0", "id": 3, "result": nil})
	h.send(message{"jsonrpc": "2.0", "id": call["id"], "result": message{
		"root": "/p", "tasks": message{"a": message{}, "b": message{}}, "edges": [][]string{{"b", "a"}},
	}})
	r := h.next()
	expectEqual(t, r["id"], 2)
	expectEqual(t, r["result"].(map[string]interface{})["stdout"], "2 tasks, edge b->a")
	if err := h.close(); err != nil {
		t.Fatal(err)
	}
}

func TestACallTheHostDidNotOfferFailsAtOnceNamingIt(t *testing.T) {
	p := New("p", "1.0.0")
	p.Command("results", "", func([]string, string) (CommandResult, error) {
		_, err := p.TaskResults()
		return CommandResult{}, err
	})
	h := hostCallPlugin(t, p, []string{"env_get"})
	h.request(2, "command", message{"name": "results", "cwd": "/"})
	r := h.next()
	expectEqual(t, r["id"], 2)
	code, msg := errorOf(t, r)
	expectEqual(t, code, CodeHostCallFailed)
	expectEqual(t, msg, "the host does not offer `task_results`; it is older than this plugin")
}

func TestADeniedHostCallIsPermissionDeniedWithItsData(t *testing.T) {
	p := New("p", "1.0.0")
	p.Command("token", "", func([]string, string) (CommandResult, error) {
		_, _, err := p.EnvGet("TOKEN")
		if !IsPermissionDenied(err) {
			return CommandResult{Stdout: fmt.Sprint("not denied: ", err)}, nil
		}
		data := err.(*Error).Data.(map[string]interface{})
		return CommandResult{Stdout: fmt.Sprint(data["permission"], " ", data["item"])}, nil
	})
	h := hostCallPlugin(t, p, []string{"env_get"})
	h.request(2, "command", message{"name": "token", "cwd": "/"})
	call := h.next()
	expectEqual(t, call["params"], message{"name": "TOKEN"})
	h.send(message{"jsonrpc": "2.0", "id": call["id"], "error": message{
		"code": -32020, "message": "permission denied", "data": message{"permission": "environment", "item": "TOKEN"},
	}})
	r := h.next()
	expectEqual(t, r["result"].(map[string]interface{})["stdout"], "environment TOKEN")
}
