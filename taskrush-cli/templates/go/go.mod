module example.com/@NAME@

go 1.19

require taskrush.dev/plugin v0.0.0

// The SDK vendored by `taskrush plugin new` (no module proxy serves it).
replace taskrush.dev/plugin => ./third_party/taskrush-plugin
