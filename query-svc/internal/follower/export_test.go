package follower

// Serve makes f the serving follower of generation n, as runGeneration
// does once f is ready, for tests outside the package.
func Serve(g *Generations, f Follower, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.serving, g.n = f, n
	g.running[f] = n
}
