package config

import (
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// SetDefaults fills in, from defaults, every key that the YAML document
// doc did not set, as kind's SetDefaults functions do after decoding. A
// key set to null keeps its default, except for lists, maps and
// pointers, which null empties (as YAML decoding does). doc may be nil:
// then every key takes its default.
func SetDefaults(cfg *Config, doc *yaml.Node, defaults Config) {
	if doc != nil && doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	fill(reflect.ValueOf(cfg).Elem(), reflect.ValueOf(defaults), doc)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// fill sets each field of dst that the mapping m does not set to def's.
func fill(dst, def reflect.Value, m *yaml.Node) {
	t := dst.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		v := lookup(m, yamlKey(f))
		kind := f.Type.Kind()
		switch {
		case v == nil:
			dst.Field(i).Set(def.Field(i))
		case v.Tag == "!!null" && kind != reflect.Slice && kind != reflect.Map && kind != reflect.Pointer && kind != reflect.Interface:
			dst.Field(i).Set(def.Field(i))
		case kind == reflect.Struct && v.Kind == yaml.MappingNode && !reflect.PointerTo(f.Type).Implements(unmarshalerType):
			fill(dst.Field(i), def.Field(i), v)
		}
	}
}

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// lookup returns the value node of key in mapping m, following aliases
// and merge keys (<<), or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for m != nil && m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	var merged []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if k.Value == key {
			return v
		}
		if k.Tag == "!!merge" {
			if v.Kind == yaml.SequenceNode {
				merged = append(merged, v.Content...)
			} else {
				merged = append(merged, v)
			}
		}
	}
	for _, mm := range merged {
		if v := lookup(mm, key); v != nil {
			return v
		}
	}
	return nil
}
