package static

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/bastion-ssh/bastion/auth"
)

// File is the users file.
type File struct {
	// ToolPrefix marks groups that make a user a tool maintainer
	// (default "tools.").
	ToolPrefix string `yaml:"tool_prefix,omitempty"`
	Users      []User `yaml:"users"`
	Tools      []Tool `yaml:"tools,omitempty"`
}

// User is one person.
type User struct {
	Name   string   `yaml:"name"`
	UID    int      `yaml:"uid"`
	GID    int      `yaml:"gid"`
	GIDs   []int    `yaml:"gids,omitempty"`
	Home   string   `yaml:"home"`
	Shell  string   `yaml:"shell"`
	Groups []string `yaml:"groups,omitempty"`
	// Keys are authorized_keys lines.
	Keys []string `yaml:"keys,omitempty"`
	// KeyFiles are authorized_keys files (or .pub files); globs allowed.
	KeyFiles []string `yaml:"key_files,omitempty"`
}

// Tool is one tool account.
type Tool struct {
	Name  string `yaml:"name"`
	UID   int    `yaml:"uid"`
	GID   int    `yaml:"gid"`
	Home  string `yaml:"home"`
	Shell string `yaml:"shell"`
}

// Directory serves users from a File.
type Directory struct {
	log   *slog.Logger
	file  File
	users map[string]*User
	tools map[string]*Tool

	// inline holds each user's parsed keys: lines, parsed once.
	inline map[string][]auth.AuthorizedKey
	warn   auth.KeyWarnings

	mu       sync.Mutex
	keyCache map[string]keyFileEntry // path → parsed keys
}

type keyFileEntry struct {
	mtime time.Time
	size  int64
	keys  []auth.AuthorizedKey
}

// Load reads a users file.
func Load(path string, log *slog.Logger) (*Directory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return newDirectory(f, path, log)
}

// New validates f and returns a Directory.
func New(f File, log *slog.Logger) (*Directory, error) {
	return newDirectory(f, "users file", log)
}

func newDirectory(f File, path string, log *slog.Logger) (*Directory, error) {
	if f.ToolPrefix == "" {
		f.ToolPrefix = "tools."
	}
	d := &Directory{
		log:      log,
		file:     f,
		users:    make(map[string]*User),
		tools:    make(map[string]*Tool),
		inline:   make(map[string][]auth.AuthorizedKey),
		keyCache: make(map[string]keyFileEntry),
	}
	for i := range f.Users {
		u := &f.Users[i]
		if err := auth.ValidName(u.Name); err != nil {
			return nil, fmt.Errorf("users[%d].name: %w", i, err)
		}
		if u.Home == "" {
			return nil, fmt.Errorf("users[%d] (%s): home is required", i, u.Name)
		}
		d.users[u.Name] = u
		for j, line := range u.Keys {
			src := fmt.Sprintf("%s users[%d].keys[%d]", path, i, j)
			k, err := auth.ParseAuthorizedKey([]byte(line), src)
			if err != nil {
				d.warn.Warn(log.With("user", u.Name), src, []byte(line), err)
				continue
			}
			d.inline[u.Name] = append(d.inline[u.Name], k)
		}
	}
	for i := range f.Tools {
		t := &f.Tools[i]
		if err := auth.ValidName(t.Name); err != nil {
			return nil, fmt.Errorf("tools[%d].name: %w", i, err)
		}
		d.tools[t.Name] = t
	}
	return d, nil
}

// LookupUser implements auth.Directory.
func (d *Directory) LookupUser(_ context.Context, name string) (*auth.User, error) {
	u, ok := d.users[name]
	if !ok {
		return nil, fmt.Errorf("user %s: %w", name, auth.ErrNotFound)
	}
	out := &auth.User{
		Account: auth.Account{Name: u.Name, UID: u.UID, GID: u.GID, GIDs: u.GIDs, Home: u.Home, Shell: u.Shell},
		Groups:  u.Groups,
	}
	for _, g := range u.Groups {
		if tool, ok := strings.CutPrefix(g, d.file.ToolPrefix); ok && tool != "" {
			out.Tools = append(out.Tools, tool)
		}
	}
	out.Keys = append(out.Keys, d.inline[u.Name]...)
	for _, pattern := range u.KeyFiles {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			d.log.Warn("bad key file pattern", "user", u.Name, "pattern", pattern, "err", err)
			continue
		}
		for _, p := range paths {
			out.Keys = append(out.Keys, d.keyFile(p)...)
		}
	}
	return out, nil
}

// LookupTool implements auth.Directory.
func (d *Directory) LookupTool(_ context.Context, name string) (*auth.Account, error) {
	t, ok := d.tools[name]
	if !ok {
		return nil, fmt.Errorf("tool %s: %w", name, auth.ErrNotFound)
	}
	return &auth.Account{Name: t.Name, UID: t.UID, GID: t.GID, Home: t.Home, Shell: t.Shell}, nil
}

// keyFile returns the keys in an authorized_keys file, re-reading it only
// when it changed.
func (d *Directory) keyFile(path string) []auth.AuthorizedKey {
	st, err := os.Stat(path)
	if err != nil {
		d.log.Warn("cannot read key file", "file", path, "err", err)
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.keyCache[path]; ok && e.mtime.Equal(st.ModTime()) && e.size == st.Size() {
		return e.keys
	}
	keys, err := ReadAuthorizedKeys(path, func(src string, line []byte, err error) { d.warn.Warn(d.log, src, line, err) })
	if err != nil {
		d.log.Warn("cannot read key file", "file", path, "err", err)
		return nil
	}
	d.keyCache[path] = keyFileEntry{mtime: st.ModTime(), size: st.Size(), keys: keys}
	return keys
}

// ReadAuthorizedKeys parses an authorized_keys file with its options.
// A line that cannot be used (malformed, or with an option bastion does
// not implement) is skipped and reported to warn with its "FILE:LINE".
func ReadAuthorizedKeys(path string, warn func(source string, line []byte, err error)) ([]auth.AuthorizedKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []auth.AuthorizedKey
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), auth.MaxKeyLine)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		src := fmt.Sprintf("%s:%d", path, line)
		k, err := auth.ParseAuthorizedKey(text, src)
		if err != nil {
			warn(src, text, err)
			continue
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return keys, fmt.Errorf("read %s: %w", path, err)
	}
	return keys, nil
}
