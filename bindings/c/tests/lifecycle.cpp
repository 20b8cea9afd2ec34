// The C API through the C++17 RAII wrapper (model_manager.hpp): the
// lifecycle, progress, events, cancel in the middle of a load, switching
// models, a corrupt file, every NULL argument, a lease held across an
// unload, and destroy during a load.
//
// Built with -Wall -Wextra -Werror -fsanitize=address,undefined.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "common.h"
#include "model_manager.hpp"
#include "null_args.h"

using namespace std::chrono_literals;

static_assert(!std::is_copy_constructible_v<mm::Manager>, "move-only");
static_assert(!std::is_copy_constructible_v<mm::Lease>, "move-only");
static_assert(!std::is_copy_constructible_v<mm::Subscription>, "move-only");
static_assert(std::is_nothrow_move_constructible_v<mm::Manager>, "movable");
static_assert(std::is_nothrow_move_constructible_v<mm::Lease>, "movable");
static_assert(std::is_nothrow_move_constructible_v<mm::Subscription>, "movable");

// Run `f`, which must throw an mm::Error with `code`.
template <typename F>
static void expect_error(F &&f, mm_result code, const char *what) {
    try {
        f();
    } catch (const mm::Error &e) {
        if (e.code() != code) {
            std::fprintf(stderr, "%s threw %s (%s), expected %s\n", what, e.code_name(), e.what(),
                         mm_result_name(code));
            std::abort();
        }
        return;
    }
    std::fprintf(stderr, "%s did not throw\n", what);
    std::abort();
}

// A load's outcome, delivered on the worker thread.
struct Outcome {
    std::mutex lock;
    std::condition_variable cv;
    int calls = 0;
    mm_result result = MM_RESULT_PANIC;
    mm_state state = MM_STATE_FAILED;
    std::uint64_t resident_bytes = UINT64_MAX;

    mm::Manager::LoadCallback callback() {
        return [this](mm_result r, const mm_snapshot &s) {
            std::lock_guard<std::mutex> guard(lock);
            calls++;
            result = r;
            state = s.state;
            resident_bytes = s.resident_bytes;
            cv.notify_all();
        };
    }

    // Wait for the callback; the outcome's (calls, result).
    std::pair<int, mm_result> get() {
        std::unique_lock<std::mutex> guard(lock);
        cv.wait(guard, [this] { return calls > 0; });
        return {calls, result};
    }

    int calls_now() {
        std::lock_guard<std::mutex> guard(lock);
        return calls;
    }

    // The snapshot the callback was given: (state, resident bytes).
    std::pair<mm_state, std::uint64_t> seen() {
        std::lock_guard<std::mutex> guard(lock);
        return {state, resident_bytes};
    }
};

static void lifecycle(const std::string &tiny, const std::string &other) {
    std::atomic<int> progress_calls{0};
    mm::Options options;
    options.chunk_size = 256;
    options.drain_timeout_ms = 500;
    options.on_progress = [&](const mm_progress &p) {
        CHECK(p.bytes_done <= p.bytes_total);
        progress_calls++;
    };
    mm::Manager manager(std::move(options));
    CHECK(manager.state() == MM_STATE_IDLE);

    std::mutex events_lock;
    std::vector<mm_event> events;
    mm::Subscription sub = manager.subscribe([&](const mm_event &e) {
        // Blocking calls are refused inside callbacks.
        expect_error([&] { manager.wait(0ms); }, MM_RESULT_CALLED_FROM_CALLBACK, "wait");
        std::lock_guard<std::mutex> guard(events_lock);
        events.push_back(e);
    });

    Outcome outcome;
    manager.load(tiny, outcome.callback());
    CHECK(manager.wait(30s) == MM_STATE_READY);
    CHECK(outcome.get() == std::make_pair(1, MM_RESULT_OK));
    CHECK(progress_calls == 3);

    mm_snapshot snapshot = manager.snapshot();
    CHECK(snapshot.state == MM_STATE_READY && snapshot.progress.tensors_done == 3);
    CHECK(manager.sample_size() == std::optional<std::uint64_t>(64));
    CHECK(manager.config("sample_size") == std::optional<std::string>("64"));
    CHECK(manager.config("_class_name") == std::optional<std::string>("\"UNet2DConditionModel\""));
    CHECK(!manager.config("nope").has_value());
    CHECK(manager.resident_bytes() == 3 * 64 * 4);

    {
        mm::Lease lease = manager.acquire();
        CHECK(lease.tensor_count() == 3);
        CHECK(lease.tensor_name(1) == "t1");
        CHECK(lease.find("t2") == std::optional<std::size_t>(2));
        CHECK(!lease.find("t7").has_value());
        mm_tensor t = lease.tensor("t1");
        CHECK(t.dtype == MM_DTYPE_F32 && t.rank == 1 && t.shape[0] == 64);
        const float *data = static_cast<const float *>(t.data);
        for (std::size_t i = 0; i < 64; i++) CHECK(data[i] == float(mm_test_value(1, i)));
        expect_error([&] { lease.tensor(3); }, MM_RESULT_NOT_FOUND, "tensor(3)");

        // A lease held across an unload.
        try {
            manager.unload_for(100ms);
            CHECK(!"unload_for returned with a lease held");
        } catch (const mm::LeasesOutstanding &e) {
            CHECK(e.code() == MM_RESULT_LEASES_OUTSTANDING && e.leases() == 1);
        }
        CHECK(manager.state() == MM_STATE_UNLOADING);
        expect_error([&] { manager.acquire(); }, MM_RESULT_NOT_READY, "acquire");
        CHECK(data[63] == float(mm_test_value(1, 63)));
        mm::Lease moved = std::move(lease);
        CHECK(!lease && moved);
    }  // released here
    CHECK(manager.wait() == MM_STATE_IDLE);
    CHECK(manager.resident_bytes() == 0);
    expect_error([&] { manager.sample_size(); }, MM_RESULT_NOT_READY, "sample_size");
    expect_error([&] { manager.cancel(); }, MM_RESULT_INVALID_TRANSITION, "cancel");

    // Switching models.
    manager.load(tiny);
    CHECK(manager.wait() == MM_STATE_READY);
    manager.load(other);
    CHECK(manager.wait() == MM_STATE_READY);
    CHECK(manager.sample_size() == std::optional<std::uint64_t>(96));
    manager.unload();
    CHECK(manager.wait() == MM_STATE_IDLE);

    // 2 + 2 + 2 + 4 + 2 transitions; delivery is asynchronous.
    for (int i = 0; i < 500; i++) {
        {
            std::lock_guard<std::mutex> guard(events_lock);
            if (events.size() >= 12) break;
        }
        std::this_thread::sleep_for(10ms);
    }
    sub.reset();
    std::lock_guard<std::mutex> guard(events_lock);
    CHECK(events.size() == 12);
    CHECK(events.front().from == MM_STATE_IDLE && events.front().to == MM_STATE_LOADING);
    CHECK(events.back().from == MM_STATE_UNLOADING && events.back().to == MM_STATE_IDLE);
    for (std::size_t i = 1; i < events.size(); i++) {
        CHECK(events[i].from == events[i - 1].to);
        CHECK(events[i].snapshot.generation > events[i - 1].snapshot.generation);
    }
}

static void cancel_mid_load(const std::string &big, const std::string &tiny) {
    std::atomic<int> calls{0};
    std::atomic<mm::Manager *> cancel_target{nullptr};
    std::atomic<mm::Manager *> supersede_target{nullptr};
    Outcome cancelled, first, second;
    mm::Options options;
    options.chunk_size = 4096;
    options.on_progress = [&](const mm_progress &) {
        if (calls++ != 0) return;
        // Act from the first progress callback: certainly mid-load.
        if (mm::Manager *m = cancel_target.load()) m->cancel();
        if (mm::Manager *m = supersede_target.load()) m->load(tiny, second.callback());
    };
    mm::Manager manager(std::move(options));

    cancel_target = &manager;
    manager.load(big, cancelled.callback());
    CHECK(manager.wait() == MM_STATE_IDLE);
    CHECK(cancelled.get() == std::make_pair(1, MM_RESULT_CANCELLED));
    CHECK(calls < 16);  // of 256 chunks
    CHECK(manager.resident_bytes() == 0);

    // Superseded by a load of another model.
    cancel_target = nullptr;
    supersede_target = &manager;
    calls = 0;
    manager.load(big, first.callback());
    CHECK(first.get().second == MM_RESULT_SUPERSEDED);
    CHECK(manager.wait() == MM_STATE_READY);
    CHECK(second.get() == std::make_pair(1, MM_RESULT_OK));
    CHECK(manager.sample_size() == std::optional<std::uint64_t>(64));
}

static void corrupt(const std::string &path, const std::string &tiny) {
    mm::Manager manager;
    Outcome outcome;
    manager.load(path, outcome.callback());
    CHECK(manager.wait() == MM_STATE_FAILED);
    CHECK(outcome.get().second == MM_RESULT_INVALID_MODEL);
    CHECK(manager.snapshot().error == MM_RESULT_INVALID_MODEL);
    std::string message = manager.error_message();
    CHECK(message.find("corrupt.safetensors") != std::string::npos);
    expect_error([&] { manager.acquire(); }, MM_RESULT_NOT_READY, "acquire");
    manager.reset();
    expect_error([&] { manager.error_message(); }, MM_RESULT_NOT_FOUND, "error_message");
    manager.load(tiny);
    CHECK(manager.wait() == MM_STATE_READY);
}

static void destroy_during_load(const std::string &big, const std::string &tiny) {
    Outcome outcome;
    std::atomic<int> calls{0};
    {
        std::atomic<mm_manager *> target{nullptr};
        mm::Options options;
        options.chunk_size = 4096;
        options.on_progress = [&](const mm_progress &) {
            if (calls++ != 0) return;
            // Hold the load in its first chunk until destroy has begun
            // (commands answer SHUT_DOWN; reads and refused commands are
            // allowed in callbacks, also during destroy). The state stays
            // Loading meanwhile: this load has not freed what it read.
            bool shut_down = false;
            for (int i = 0; i < 10000 && !shut_down; i++) {
                mm_state state = MM_STATE_IDLE;
                CHECK_OK(mm_manager_state(target.load(), &state));
                CHECK(state == MM_STATE_LOADING);
                mm_result reset = mm_manager_reset(target.load());
                CHECK(reset == MM_RESULT_INVALID_TRANSITION || reset == MM_RESULT_SHUT_DOWN);
                shut_down = reset == MM_RESULT_SHUT_DOWN;
                if (!shut_down) std::this_thread::sleep_for(1ms);
            }
            CHECK(shut_down);
        };
        mm::Manager manager(std::move(options));
        target = manager.get();
        manager.load(big, outcome.callback());
        while (calls == 0) std::this_thread::sleep_for(1ms);
        mm::Manager moved = std::move(manager);  // the moved-from one is empty
        CHECK(moved.get() != nullptr && manager.get() == nullptr);
    }  // destroyed while loading
    CHECK(outcome.calls_now() == 1);
    CHECK(outcome.get().second == MM_RESULT_CANCELLED);
    // Reported once the memory is back: Idle, nothing resident.
    CHECK(outcome.seen() == std::make_pair(MM_STATE_IDLE, std::uint64_t{0}));

    // A lease and a subscription may outlive their manager.
    mm::Lease lease;
    mm::Subscription sub;
    {
        mm::Options options;
        options.drain_timeout_ms = 100;
        mm::Manager manager(std::move(options));
        sub = manager.subscribe([](const mm_event &) {});
        manager.load(tiny);
        CHECK(manager.wait() == MM_STATE_READY);
        lease = manager.acquire();
    }
    CHECK(static_cast<const float *>(lease.tensor("t0").data)[3] == float(mm_test_value(0, 3)));
    lease.release();
    sub.reset();
}

int main() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    char root[512];
    mm_test_tempdir(root, sizeof root);
    const std::string base = root;
    const std::string tiny = base + "/tiny", other = base + "/other", big = base + "/big",
                      bad = base + "/corrupt.safetensors";
    mm_test_write_model(tiny.c_str(), 3, 64, 64);
    mm_test_write_model(other.c_str(), 5, 32, 96);
    mm_test_write_model(big.c_str(), 4, 64 * 1024, 128);
    mm_test_write_corrupt(bad.c_str());

    std::printf("model-manager %s (C++)\n", mm::version());
    CHECK(std::strcmp(mm::state_name(MM_STATE_READY), "ready") == 0);
    expect_error([] { mm::check(MM_RESULT_TIMEOUT); }, MM_RESULT_TIMEOUT, "check");

    lifecycle(tiny, other);
    std::printf("ok lifecycle\n");
    cancel_mid_load(big, tiny);
    std::printf("ok cancel in the middle of a load\n");
    corrupt(bad, tiny);
    std::printf("ok corrupt file\n");
    mm_test_null_arguments(tiny.c_str());
    std::printf("ok NULL arguments\n");
    destroy_during_load(big, tiny);
    std::printf("ok destroy during a load\n");

    mm_test_rmtree(root);
    std::printf("all C++ tests passed\n");
    return 0;
}
