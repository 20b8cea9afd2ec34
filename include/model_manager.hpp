// model-manager: a small C++17 RAII wrapper over the C API (model_manager.h).
//
// - mm::Manager, mm::Pool, mm::Lease and mm::Subscription own their C
//   handles and are move-only; destroying them calls mm_manager_destroy,
//   mm_pool_destroy, mm_lease_release and mm_subscription_unsubscribe.
// - Every failure throws mm::Error, which carries the mm_result code and the
//   library's message; mm::LeasesOutstanding (an mm::Error) also carries the
//   number of leases still held.
// - Callbacks are std::function. They run on the manager's threads (see
//   model_manager.h); an exception thrown by one is caught and dropped, since
//   none may cross into the library. Inside a callback, do not destroy the
//   Manager and do not call wait() or unload_for() (they throw an mm::Error
//   with MM_RESULT_CALLED_FROM_CALLBACK).
//
// Thread safety is the C API's: a Manager's const and non-const methods may be
// called from several threads at once, except its destructor and move
// assignment; a Lease may be read from several threads at once.
#ifndef MODEL_MANAGER_HPP
#define MODEL_MANAGER_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "model_manager.h"

namespace mm {

/// A failed call: the mm_result code and the library's message.
class Error : public std::runtime_error {
public:
    Error(mm_result code, const std::string &message)
        : std::runtime_error(message), code_(code) {}

    /// The C result code (never MM_RESULT_OK).
    mm_result code() const noexcept { return code_; }

    /// The code's name, such as "MM_RESULT_NOT_READY".
    const char *code_name() const noexcept { return mm_result_name(code_); }

private:
    mm_result code_;
};

/// An unload timed out with leases still held (code
/// MM_RESULT_LEASES_OUTSTANDING); the unload goes on without the caller.
class LeasesOutstanding : public Error {
public:
    LeasesOutstanding(std::size_t leases, const std::string &message)
        : Error(MM_RESULT_LEASES_OUTSTANDING, message), leases_(leases) {}

    /// Leases held when the wait ended.
    std::size_t leases() const noexcept { return leases_; }

private:
    std::size_t leases_;
};

namespace detail {

/// Copy a string out of a function following the C API's buffer protocol.
template <typename F>
inline mm_result read_string(F &&copy, std::string &out) {
    std::size_t len = 0;
    mm_result rc = copy(static_cast<char *>(nullptr), std::size_t{0}, &len);
    if (rc != MM_RESULT_BUFFER_TOO_SMALL) return rc;
    std::string buf(len + 1, '\0');
    rc = copy(buf.data(), buf.size(), &len);
    if (rc == MM_RESULT_OK) {
        buf.resize(len);
        out = std::move(buf);
    }
    return rc;
}

}  // namespace detail

/// The message of the last failed call on this thread ("" if none).
inline std::string last_error_message() {
    std::string message;
    detail::read_string(
        [](char *buf, std::size_t len, std::size_t *len_out) {
            return mm_last_error_message(buf, len, len_out);
        },
        message);
    return message;
}

/// Throw an mm::Error for any code but MM_RESULT_OK.
inline void check(mm_result rc) {
    if (rc != MM_RESULT_OK) throw Error(rc, last_error_message());
}

/// The library's version, such as "0.1.0".
inline const char *version() noexcept { return mm_version(); }

/// A state's name, such as "ready".
inline const char *state_name(mm_state state) noexcept {
    return mm_state_name(static_cast<std::uint32_t>(state));
}

/// Settings for a Manager (see mm_manager_options).
struct Options {
    std::string device = "cpu";
    std::uint64_t memory_budget = 0;
    std::size_t chunk_size = 0;
    std::size_t read_threads = 0;
    /// MM_DTYPE_F32, MM_DTYPE_F16, MM_DTYPE_BF16, or MM_DTYPE_KEEP.
    std::uint32_t dtype = MM_DTYPE_KEEP;
    std::uint32_t drain_timeout_ms = 0;
    /// Called on a loader thread after every chunk read; may be empty.
    std::function<void(const mm_progress &)> on_progress;
};

/// A lease on the ready model: while it lives the model stays loaded and
/// every pointer obtained through it stays valid. Move-only.
class Lease {
public:
    Lease() noexcept = default;
    explicit Lease(mm_lease *lease) noexcept : lease_(lease) {}
    Lease(Lease &&other) noexcept : lease_(std::exchange(other.lease_, nullptr)) {}
    Lease &operator=(Lease &&other) noexcept {
        if (this != &other) {
            release();
            lease_ = std::exchange(other.lease_, nullptr);
        }
        return *this;
    }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    ~Lease() { release(); }

    /// Release now (a later unload no longer waits for this lease).
    void release() noexcept { mm_lease_release(std::exchange(lease_, nullptr)); }

    explicit operator bool() const noexcept { return lease_ != nullptr; }
    mm_lease *get() const noexcept { return lease_; }

    std::size_t tensor_count() const {
        std::size_t n = 0;
        check(mm_lease_tensor_count(lease_, &n));
        return n;
    }

    std::string_view tensor_name(std::size_t index) const {
        const char *name = nullptr;
        check(mm_lease_tensor_name(lease_, index, &name));
        return name;
    }

    /// The index of the tensor called `name`, if there is one.
    std::optional<std::size_t> find(const std::string &name) const {
        std::size_t index = 0;
        mm_result rc = mm_lease_tensor_find(lease_, name.c_str(), &index);
        if (rc == MM_RESULT_NOT_FOUND) return std::nullopt;
        check(rc);
        return index;
    }

    /// Tensor `index` (its pointers live as long as this lease).
    mm_tensor tensor(std::size_t index) const {
        mm_tensor t{};
        check(mm_lease_tensor(lease_, index, &t));
        return t;
    }

    /// The tensor called `name`; throws MM_RESULT_NOT_FOUND if none.
    mm_tensor tensor(const std::string &name) const {
        std::size_t index = 0;
        check(mm_lease_tensor_find(lease_, name.c_str(), &index));
        return tensor(index);
    }

    /// The version of a pool's model this lease holds; throws
    /// MM_RESULT_NOT_FOUND for a manager's lease.
    std::uint64_t version() const {
        std::uint64_t v = 0;
        check(mm_lease_version(lease_, &v));
        return v;
    }

private:
    mm_lease *lease_ = nullptr;
};

/// A subscription to a manager's transitions. Move-only; once it is
/// destroyed or reset(), its callback is never called again. It may outlive
/// its Manager. Do not destroy or reset it from inside its own callback (that
/// would destroy the std::function while it runs).
class Subscription {
public:
    using Callback = std::function<void(const mm_event &)>;

    Subscription() noexcept = default;
    Subscription(Subscription &&other) noexcept
        : sub_(std::exchange(other.sub_, nullptr)), callback_(std::move(other.callback_)) {}
    Subscription &operator=(Subscription &&other) noexcept {
        if (this != &other) {
            reset();
            sub_ = std::exchange(other.sub_, nullptr);
            callback_ = std::move(other.callback_);
        }
        return *this;
    }
    Subscription(const Subscription &) = delete;
    Subscription &operator=(const Subscription &) = delete;
    ~Subscription() { reset(); }

    /// Unsubscribe now.
    void reset() noexcept {
        // Unsubscribe first: after it returns the callback is not running.
        mm_subscription_unsubscribe(std::exchange(sub_, nullptr));
        callback_.reset();
    }

    explicit operator bool() const noexcept { return sub_ != nullptr; }

private:
    friend class Manager;

    static void trampoline(void *userdata, const mm_event *event) noexcept {
        try {
            (*static_cast<Callback *>(userdata))(*event);
        } catch (...) {
            // No exception may cross into the library.
        }
    }

    mm_subscription *sub_ = nullptr;
    // On the heap, so that its address survives moves of the Subscription.
    std::unique_ptr<Callback> callback_;
};

/// A model manager (see mm_manager). Move-only; the destructor shuts it down
/// (cancels, waits for leases up to the drain timeout, unloads, joins).
class Manager {
public:
    /// Called once when a load ends: MM_RESULT_OK and the Ready snapshot, or
    /// why it did not finish and the manager's snapshot then.
    using LoadCallback = std::function<void(mm_result, const mm_snapshot &)>;

    explicit Manager(Options options = {}) {
        mm_manager_options c{};
        check(mm_manager_options_init(&c));
        c.device = options.device.c_str();
        c.memory_budget = options.memory_budget;
        c.chunk_size = options.chunk_size;
        c.read_threads = options.read_threads;
        c.dtype = options.dtype;
        c.drain_timeout_ms = options.drain_timeout_ms;
        if (options.on_progress) {
            progress_ = std::make_unique<ProgressCallback>(std::move(options.on_progress));
            c.progress = &Manager::progress_trampoline;
            c.progress_userdata = progress_.get();
        }
        check(mm_manager_new(&c, &manager_));
    }
    Manager(Manager &&other) noexcept
        : manager_(std::exchange(other.manager_, nullptr)),
          progress_(std::move(other.progress_)) {}
    Manager &operator=(Manager &&other) noexcept {
        if (this != &other) {
            destroy();
            manager_ = std::exchange(other.manager_, nullptr);
            progress_ = std::move(other.progress_);
        }
        return *this;
    }
    Manager(const Manager &) = delete;
    Manager &operator=(const Manager &) = delete;
    ~Manager() { destroy(); }

    mm_manager *get() const noexcept { return manager_; }

    /// Start loading `path`; returns at once. `on_done`, if given, is called
    /// once on the manager's worker thread.
    void load(const std::string &path, LoadCallback on_done = {}) {
        if (!on_done) {
            check(mm_manager_load(manager_, path.c_str(), nullptr, nullptr));
            return;
        }
        auto callback = std::make_unique<LoadCallback>(std::move(on_done));
        check(mm_manager_load(manager_, path.c_str(), &Manager::load_trampoline,
                              callback.get()));
        callback.release();  // freed by the trampoline, called exactly once
    }

    /// Block until no load or unload is in flight; the settled state.
    /// Throws MM_RESULT_TIMEOUT after `timeout`.
    mm_state wait(std::chrono::milliseconds timeout = forever()) const {
        mm_state state{};
        check(mm_manager_wait(manager_, to_ms(timeout), &state));
        return state;
    }

    /// Cancel the load; the state stays MM_STATE_LOADING until the load has
    /// freed what it read (wait() waits for Idle).
    void cancel() const { check(mm_manager_cancel(manager_)); }

    /// Start unloading; returns at once.
    void unload() const { check(mm_manager_unload(manager_)); }

    /// Unload and wait up to `timeout`; throws mm::LeasesOutstanding if
    /// leases are still held then, an mm::Error with MM_RESULT_TIMEOUT if
    /// none is but the memory is still being freed.
    void unload_for(std::chrono::milliseconds timeout = forever()) const {
        std::size_t leases = 0;
        mm_result rc = mm_manager_unload_timeout(manager_, to_ms(timeout), &leases);
        if (rc == MM_RESULT_LEASES_OUTSTANDING)
            throw LeasesOutstanding(leases, last_error_message());
        check(rc);
    }

    void reset() const { check(mm_manager_reset(manager_)); }

    mm_state state() const {
        mm_state state{};
        check(mm_manager_state(manager_, &state));
        return state;
    }

    mm_snapshot snapshot() const {
        mm_snapshot snapshot{};
        check(mm_manager_snapshot(manager_, &snapshot));
        return snapshot;
    }

    /// Why the last load failed (throws MM_RESULT_NOT_FOUND unless Failed).
    std::string error_message() const {
        std::string message;
        check(detail::read_string(
            [this](char *buf, std::size_t len, std::size_t *len_out) {
                return mm_manager_error_message(manager_, buf, len, len_out);
            },
            message));
        return message;
    }

    /// `sample_size` of the ready model's config; nullopt if it has none.
    /// Throws MM_RESULT_NOT_READY unless Ready.
    std::optional<std::uint64_t> sample_size() const {
        std::uint64_t size = 0;
        mm_result rc = mm_manager_sample_size(manager_, &size);
        if (rc == MM_RESULT_NOT_FOUND) return std::nullopt;
        check(rc);
        return size;
    }

    /// The top-level config value `key` as JSON; nullopt if there is none.
    /// Throws MM_RESULT_NOT_READY unless Ready.
    std::optional<std::string> config(const std::string &key) const {
        std::string json;
        mm_result rc = detail::read_string(
            [this, &key](char *buf, std::size_t len, std::size_t *len_out) {
                return mm_manager_config(manager_, key.c_str(), buf, len, len_out);
            },
            json);
        if (rc == MM_RESULT_NOT_FOUND) return std::nullopt;
        check(rc);
        return json;
    }

    std::uint64_t resident_bytes() const {
        std::uint64_t bytes = 0;
        check(mm_manager_resident_bytes(manager_, &bytes));
        return bytes;
    }

    std::size_t outstanding_leases() const {
        std::size_t n = 0;
        check(mm_manager_outstanding_leases(manager_, &n));
        return n;
    }

    /// A lease on the ready model; throws MM_RESULT_NOT_READY unless Ready.
    Lease acquire() const {
        mm_lease *lease = nullptr;
        check(mm_manager_acquire(manager_, &lease));
        return Lease(lease);
    }

    /// Call `callback` for every transition from now on, in order, on the
    /// manager's worker thread.
    Subscription subscribe(Subscription::Callback callback) const {
        Subscription sub;
        sub.callback_ = std::make_unique<Subscription::Callback>(std::move(callback));
        check(mm_manager_subscribe(manager_, &Subscription::trampoline, sub.callback_.get(),
                                   &sub.sub_));
        return sub;
    }

    static constexpr std::chrono::milliseconds forever() noexcept {
        return std::chrono::milliseconds(MM_TIMEOUT_INFINITE);
    }

private:
    using ProgressCallback = std::function<void(const mm_progress &)>;

    void destroy() noexcept {
        if (manager_ != nullptr) {
            // Fails inside a callback (documented as forbidden) or when a
            // callback is stuck: the manager may still call the progress
            // callback then, so keep it alive (leaked) rather than free it.
            if (mm_manager_destroy(manager_) != MM_RESULT_OK) (void)progress_.release();
            manager_ = nullptr;
        }
    }

    static std::uint32_t to_ms(std::chrono::milliseconds timeout) noexcept {
        if (timeout.count() < 0) return 0;
        if (timeout.count() >= static_cast<long long>(MM_TIMEOUT_INFINITE))
            return MM_TIMEOUT_INFINITE;
        return static_cast<std::uint32_t>(timeout.count());
    }

    static void progress_trampoline(void *userdata, const mm_progress *progress) noexcept {
        try {
            (*static_cast<ProgressCallback *>(userdata))(*progress);
        } catch (...) {
        }
    }

    static void load_trampoline(void *userdata, mm_result result,
                                const mm_snapshot *snapshot) noexcept {
        std::unique_ptr<LoadCallback> callback(static_cast<LoadCallback *>(userdata));
        try {
            (*callback)(result, *snapshot);
        } catch (...) {
        }
    }

    mm_manager *manager_ = nullptr;
    // On the heap, so that its address survives moves of the Manager; freed
    // after mm_manager_destroy has joined the loader threads.
    std::unique_ptr<ProgressCallback> progress_;
};

/// Settings for a Pool (see mm_pool_options; the defaults are its).
struct PoolOptions {
    std::string device = "cpu";
    /// 0: the memory available when the pool is created.
    std::uint64_t memory_budget = 0;
    std::size_t chunk_size = 0;
    std::size_t read_threads = 0;
    /// MM_DTYPE_F32, MM_DTYPE_F16, MM_DTYPE_BF16, or MM_DTYPE_KEEP.
    std::uint32_t dtype = MM_DTYPE_KEEP;
    std::chrono::milliseconds drain_timeout{5000};
    /// MM_KEEP_ALIVE_FOREVER: until evicted or unloaded.
    std::uint64_t keep_alive_ms = MM_KEEP_ALIVE_FOREVER;
    std::uint32_t max_queue = 64;
    std::uint32_t concurrent_loads = 1;
    std::chrono::milliseconds admission_timeout{60000};
    std::chrono::milliseconds retry_cooldown{5000};
    /// Bytes left to other processes: the budget less this.
    std::uint64_t headroom = 0;
    /// A CUDA pool's host tier: evicted models are parked in this much
    /// page-locked host memory (0: none; must be 0 on the CPU).
    std::uint64_t host_budget = 0;
};

/// Several models under one memory budget, named by ids (see mm_pool).
/// Move-only; the destructor shuts it down (waits for leases up to the
/// drain timeout, frees the models, joins its threads). Leases (mm::Lease)
/// may outlive it. Every method may be called from several threads at once,
/// except the destructor and move assignment.
class Pool {
public:
    explicit Pool(const PoolOptions &options = {}) {
        mm_pool_options c{};
        check(mm_pool_options_init(&c));
        c.device = options.device.c_str();
        c.memory_budget = options.memory_budget;
        c.chunk_size = options.chunk_size;
        c.read_threads = options.read_threads;
        c.dtype = options.dtype;
        c.drain_timeout_ms = to_ms(options.drain_timeout);
        c.keep_alive_ms = options.keep_alive_ms;
        c.max_queue = options.max_queue;
        c.concurrent_loads = options.concurrent_loads;
        c.admission_timeout_ms = to_ms(options.admission_timeout);
        c.retry_cooldown_ms = to_ms(options.retry_cooldown);
        c.headroom = options.headroom;
        c.host_budget = options.host_budget;
        check(mm_pool_new(&c, &pool_));
    }
    Pool(Pool &&other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}
    Pool &operator=(Pool &&other) noexcept {
        if (this != &other) {
            destroy();
            pool_ = std::exchange(other.pool_, nullptr);
        }
        return *this;
    }
    Pool(const Pool &) = delete;
    Pool &operator=(const Pool &) = delete;
    ~Pool() { destroy(); }

    mm_pool *get() const noexcept { return pool_; }

    /// Make the model at `path` known as `id` (loads nothing).
    void add(const std::string &id, const std::string &path) const {
        check(mm_pool_add(pool_, id.c_str(), path.c_str()));
    }

    /// A lease on `id`, loading it if need be; throws MM_RESULT_TIMEOUT
    /// after `timeout` (the load goes on), or the load's error.
    Lease acquire(const std::string &id,
                  std::chrono::milliseconds timeout = Manager::forever()) const {
        mm_lease *lease = nullptr;
        check(mm_pool_acquire(pool_, id.c_str(), to_ms(timeout), &lease));
        return Lease(lease);
    }

    /// A lease on `id` with `working_bytes` reserved beside it for its
    /// inference (see mm_pool_acquire_with); released with the lease.
    Lease acquire_with(const std::string &id, std::uint64_t working_bytes,
                       std::chrono::milliseconds timeout = Manager::forever()) const {
        mm_lease *lease = nullptr;
        check(mm_pool_acquire_with(pool_, id.c_str(), working_bytes, to_ms(timeout), &lease));
        return Lease(lease);
    }

    /// Add the pipeline folder at `path` as one model per component with
    /// weights, "<id>/<component>"; their number (see mm_pool_add_pipeline).
    std::size_t add_pipeline(const std::string &id, const std::string &path) const {
        std::size_t count = 0;
        check(mm_pool_add_pipeline(pool_, id.c_str(), path.c_str(), &count));
        return count;
    }

    /// A lease on `id` if it is ready now; an empty Lease if not.
    Lease try_acquire(const std::string &id) const {
        mm_lease *lease = nullptr;
        mm_result rc = mm_pool_try_acquire(pool_, id.c_str(), &lease);
        if (rc == MM_RESULT_NOT_READY) return Lease();
        check(rc);
        return Lease(lease);
    }

    void load(const std::string &id, std::chrono::milliseconds timeout = Manager::forever()) const {
        check(mm_pool_load(pool_, id.c_str(), to_ms(timeout)));
    }

    void unload(const std::string &id,
                std::chrono::milliseconds timeout = Manager::forever()) const {
        check(mm_pool_unload(pool_, id.c_str(), to_ms(timeout)));
    }

    void remove(const std::string &id,
                std::chrono::milliseconds timeout = Manager::forever()) const {
        check(mm_pool_remove(pool_, id.c_str(), to_ms(timeout)));
    }

    /// Load `path` as the next version of `id` beside the serving one; the
    /// new version once it serves.
    std::uint64_t reload(const std::string &id, const std::string &path,
                         mm_reload_policy policy = MM_RELOAD_POLICY_KEEP_SERVING,
                         std::chrono::milliseconds timeout = Manager::forever()) const {
        std::uint64_t version = 0;
        check(mm_pool_reload(pool_, id.c_str(), path.c_str(), static_cast<std::uint32_t>(policy),
                             to_ms(timeout), &version));
        return version;
    }

    /// Stop `id`'s load in flight; whether there was one.
    bool cancel(const std::string &id) const {
        bool cancelled = false;
        check(mm_pool_cancel(pool_, id.c_str(), &cancelled));
        return cancelled;
    }

    void pin(const std::string &id) const { check(mm_pool_pin(pool_, id.c_str())); }
    void unpin(const std::string &id) const { check(mm_pool_unpin(pool_, id.c_str())); }
    void set_keep_alive(const std::string &id, std::uint64_t keep_alive_ms) const {
        check(mm_pool_set_keep_alive(pool_, id.c_str(), keep_alive_ms));
    }

    mm_pool_model_status status(const std::string &id) const {
        mm_pool_model_status s{};
        check(mm_pool_status(pool_, id.c_str(), &s));
        return s;
    }

    mm_pool_totals stats() const {
        mm_pool_totals t{};
        check(mm_pool_stats(pool_, &t));
        return t;
    }

    /// Why `id`'s last load failed; nullopt if it did not.
    std::optional<std::string> error_message(const std::string &id) const {
        std::string message;
        mm_result rc = detail::read_string(
            [this, &id](char *buf, std::size_t len, std::size_t *len_out) {
                return mm_pool_error_message(pool_, id.c_str(), buf, len, len_out);
            },
            message);
        if (rc == MM_RESULT_NOT_FOUND) return std::nullopt;
        check(rc);
        return message;
    }

    /// The counters and gauges in the Prometheus text format.
    std::string metrics_text() const {
        std::string text;
        // The text may grow between the size query and the copy: retry.
        for (;;) {
            mm_result rc = detail::read_string(
                [this](char *buf, std::size_t len, std::size_t *len_out) {
                    return mm_pool_metrics_text(pool_, buf, len, len_out);
                },
                text);
            if (rc == MM_RESULT_BUFFER_TOO_SMALL) continue;
            check(rc);
            return text;
        }
    }

private:
    void destroy() noexcept {
        if (pool_ != nullptr) {
            (void)mm_pool_destroy(pool_);
            pool_ = nullptr;
        }
    }

    static std::uint32_t to_ms(std::chrono::milliseconds timeout) noexcept {
        if (timeout.count() < 0) return 0;
        if (timeout.count() >= static_cast<long long>(MM_TIMEOUT_INFINITE))
            return MM_TIMEOUT_INFINITE;
        return static_cast<std::uint32_t>(timeout.count());
    }

    mm_pool *pool_ = nullptr;
};

}  // namespace mm

#endif  // MODEL_MANAGER_HPP
