package shellimage

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// ImageUse is one shell image of a cluster, at one digest.
type ImageUse struct {
	// Image is the reference as the config or the pod spec names it.
	Image string `json:"image"`
	// Digest is sha256:..., from the pods' status (imageID) or from the
	// reference itself when it is pinned; empty when neither says.
	Digest string `json:"digest"`
	// Pods is the number of live shell pods running Image at Digest.
	Pods int `json:"pods"`
	// Config is "primary" or "fallback" for an image of the config, and
	// empty for an image only live pods still use (an older config's).
	Config string `json:"config,omitempty"`
}

// ClusterImages is one cluster's inventory.
type ClusterImages struct {
	Cluster string     `json:"cluster"`
	Images  []ImageUse `json:"images"`
	// Error says why the cluster's pods could not be listed; Images then
	// holds only what the config names.
	Error string `json:"error,omitempty"`
}

// Inventory lists every cluster's shell images, the clusters at once, in
// config order.
func (h *Health) Inventory(ctx context.Context) []ClusterImages {
	out := make([]ClusterImages, len(h.cfg.Clusters))
	var wg sync.WaitGroup
	for i, cl := range h.cfg.Clusters {
		wg.Go(func() { out[i] = h.clusterInventory(ctx, cl) })
	}
	wg.Wait()
	return out
}

func (h *Health) clusterInventory(ctx context.Context, cl *pods.Cluster) ClusterImages {
	inv := ClusterImages{Cluster: cl.Name()}
	var live []corev1.Pod
	c, err := cl.Client()
	if err == nil {
		live, err = c.List(ctx, "", pods.ShellPodsOf(cl.Name()))
		if err != nil {
			err = pods.APIError(cl.Name(), "list shell pods", err)
		}
	}
	if err != nil {
		inv.Error = err.Error()
	}
	probed := map[string]string{}
	for _, r := range h.Probes() {
		if r.Cluster == cl.Name() && r.Digest != "" {
			probed[r.Image] = r.Digest
		}
	}
	inv.Images = tally(h.Images(cl), live, probed)
	return inv
}

// tally groups pods by (image, digest) and adds the configured images
// (configured[0] is the primary) that no pod runs. probed gives digests
// that pre-flight saw for images no pod runs. Configured images come
// first, in config order; then the others by name.
func tally(configured []string, live []corev1.Pod, probed map[string]string) []ImageUse {
	type key struct{ image, digest string }
	counts := map[key]int{}
	for i := range live {
		p := &live[i]
		if pods.Finished(p) {
			continue // ended: runs nothing, and the sweep deletes it
		}
		img := pods.Image(p)
		d := ""
		for _, st := range p.Status.ContainerStatuses {
			if st.Name == pods.Container {
				d = digestOf(st.ImageID)
			}
		}
		if d == "" {
			d = refDigest(img)
		}
		counts[key{img, d}]++
	}
	var out []ImageUse
	seen := map[string]bool{}
	for i, img := range configured {
		role := "fallback"
		if i == 0 {
			role = "primary"
		}
		var rows []ImageUse
		for k, n := range counts {
			if k.image == img {
				rows = append(rows, ImageUse{Image: img, Digest: k.digest, Pods: n, Config: role})
			}
		}
		if len(rows) == 0 {
			d := refDigest(img)
			if d == "" {
				d = probed[img]
			}
			rows = append(rows, ImageUse{Image: img, Digest: d, Config: role})
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].Digest < rows[j].Digest })
		out = append(out, rows...)
		seen[img] = true
	}
	var rest []ImageUse
	for k, n := range counts {
		if !seen[k.image] {
			rest = append(rest, ImageUse{Image: k.image, Digest: k.digest, Pods: n})
		}
	}
	sort.Slice(rest, func(i, j int) bool {
		if rest[i].Image != rest[j].Image {
			return rest[i].Image < rest[j].Image
		}
		return rest[i].Digest < rest[j].Digest
	})
	return append(out, rest...)
}

// digestOf is the digest in a container status's imageID:
// "repo@sha256:..." (what was pulled), "docker-pullable://repo@sha256:...",
// or a bare "sha256:..." (an image the runtime has under no repository
// digest: its image ID).
func digestOf(imageID string) string {
	id := imageID
	if i := strings.Index(id, "://"); i >= 0 {
		id = id[i+3:]
	}
	if i := strings.LastIndex(id, "@"); i >= 0 {
		id = id[i+1:]
	}
	if strings.HasPrefix(id, "sha256:") {
		return id
	}
	return ""
}

// refDigest is the digest a pinned reference names, or "".
func refDigest(image string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 && strings.HasPrefix(image[i+1:], "sha256:") {
		return image[i+1:]
	}
	return ""
}

// repository is an image reference without its tag and digest.
func repository(image string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// ProtectList turns inventories into what a registry's retention rules
// must keep: REPOSITORY@DIGEST for every image with a digest, sorted and
// once each; unresolved lists the references with no digest (a tag no
// pod runs), which cannot be protected by digest.
func ProtectList(invs []ClusterImages) (protect, unresolved []string) {
	for _, inv := range invs {
		for _, u := range inv.Images {
			if u.Digest == "" {
				unresolved = append(unresolved, u.Image)
				continue
			}
			protect = append(protect, repository(u.Image)+"@"+u.Digest)
		}
	}
	slices.Sort(protect)
	slices.Sort(unresolved)
	return slices.Compact(protect), slices.Compact(unresolved)
}

// imageSeries are the label sets of bastion_shell_image_pods this replica
// has set, so that an image that went away loses its series.
type imageSeries map[[3]string]bool

// updateGauge sets bastion_shell_image_pods from a fresh inventory. A
// cluster that cannot be listed keeps its last series.
func (h *Health) updateGauge(ctx context.Context) {
	h.gaugeMu.Lock()
	defer h.gaugeMu.Unlock()
	invs := h.Inventory(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	now := imageSeries{}
	for _, inv := range invs {
		if inv.Error != "" {
			for k := range h.series {
				if k[0] == inv.Cluster {
					now[k] = true
				}
			}
			h.cfg.Log.Debug("shell image inventory: cannot list pods", "project", inv.Cluster, "err", inv.Error)
			continue
		}
		sums := map[[3]string]int{}
		for _, u := range inv.Images {
			sums[[3]string{inv.Cluster, u.Image, u.Digest}] += u.Pods
		}
		for k, n := range sums {
			ops.ShellImagePods.WithLabelValues(k[0], k[1], k[2]).Set(float64(n))
			now[k] = true
		}
	}
	for k := range h.series {
		if !now[k] {
			ops.ShellImagePods.DeleteLabelValues(k[0], k[1], k[2])
		}
	}
	h.series = now
}

// String is one line per image, for logs and tests.
func (u ImageUse) String() string {
	d := u.Digest
	if d == "" {
		d = "-"
	}
	return fmt.Sprintf("%s %s %d %s", u.Image, d, u.Pods, u.Config)
}
